import assert from "node:assert/strict";
import { mergeRounds, mergeUpstream, row } from "./report.ts";

const echo = (tunnel: number, link = "default") =>
  row({
    case: "echo",
    title: "32 B echo round trip p99",
    frontend: "grpc",
    link,
    unit: "µs",
    better: "lower",
    direct: 10,
    tunnel,
    targets: [{ on: "upstream", op: "<=", value: 1 }],
    details: { tunnel },
  });

Deno.test("mergeRounds: a row measured in three rounds reports each value's median", () => {
  const other = row({ ...echo(1), title: "1 conn download", case: "download", targets: [] });
  const merged = mergeRounds([echo(500), other, echo(100), echo(300)]);
  assert.equal(merged.length, 2);
  assert.equal(merged[0]!.title, "32 B echo round trip p99");
  assert.equal(merged[0]!.tunnel, 300);
  assert.equal(merged[0]!.ratio, 30);
  assert.deepEqual(
    (merged[0]!.details!.rounds as { tunnel: number }[]).map((r) => r.tunnel),
    [500, 100, 300],
  );
  assert.equal(merged[1], other, "a row measured once passes unchanged");
});

Deno.test("mergeRounds: an even number of rounds gives the mean of the middle two", () => {
  assert.equal(mergeRounds([echo(100), echo(400), echo(200), echo(900)])[0]!.tunnel, 300);
});

Deno.test("mergeRounds then mergeUpstream: knp/up is the ratio of the two medians", () => {
  const knp = mergeRounds([echo(100), echo(900), echo(300)]);
  const up = mergeRounds([echo(200, "upstream"), echo(600, "upstream"), echo(400, "upstream")]);
  const [r] = mergeUpstream(knp, up);
  assert.equal(r!.upstream, 400);
  assert.equal(r!.vsUpstream, 0.75);
  assert.equal(r!.met, true);
  assert.equal(r!.targets![0]!.met, true);
});
