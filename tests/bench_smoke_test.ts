/**
 * The benchmark suite keeps working: `bench/main.ts --smoke` runs every case at tiny sizes
 * against real server and agent processes and writes its JSON document.
 *
 * No timing assertions: only that the run succeeds, every result is a number with a ratio, and
 * the latency cases' rows carry each of their two rounds.
 * With `KNP_UPSTREAM_SERVER` and `KNP_UPSTREAM_AGENT` set (upstream's Go binaries), the run also
 * goes through upstream's server + agent, and the knp rows carry upstream's value and knp ÷
 * upstream.
 *
 * @module
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** The `bench` task's own permissions (deno.json): the smoke run is the task's run. */
const DRIVER_PERMISSIONS: string[] = (
  JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`)).tasks.bench as string
).split(/\s+/).filter((word) => word.startsWith("--allow-"));

const UPSTREAM = Boolean(
  Deno.env.get("KNP_UPSTREAM_SERVER") && Deno.env.get("KNP_UPSTREAM_AGENT"),
);

/** Every case also ran through upstream: default-link rows carry its value and knp ÷ upstream. */
function checkUpstream(results: Record<string, unknown>[]): void {
  const defaults = results.filter((r) => r.link === "default");
  for (const c of ["download", "upload", "aggregate", "echo", "dial", "cpu", "idle", "readyz"]) {
    const r = defaults.find((r) => r.case === c && typeof r.upstream === "number");
    assert.ok(r, `no default-link ${c} row with an upstream value`);
    assert.ok(r.vsUpstream === null || typeof r.vsUpstream === "number", `${r.title}: knp/up`);
  }
  const judged = defaults.flatMap((r) => (r.targets ?? []) as { on: string; met?: boolean }[])
    .filter((t) => t.on === "upstream");
  assert.ok(judged.some((t) => typeof t.met === "boolean"), "no knp/upstream target judged");
}

Deno.test("bench: the smoke run measures every case on the direct and the tunnel path", async () => {
  const dir = await Deno.makeTempDir({ prefix: "knp-bench-smoke-" });
  try {
    const json = `${dir}/bench.json`;
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-prompt",
        ...DRIVER_PERMISSIONS,
        "bench/main.ts",
        "--smoke",
        "--rounds",
        "2",
        "--json",
        json,
      ],
      cwd: ROOT,
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = (b: Uint8Array) => new TextDecoder().decode(b);
    assert.equal(out.code, 0, `bench exited ${out.code}\n${text(out.stdout)}\n${text(out.stderr)}`);

    const doc = JSON.parse(await Deno.readTextFile(json));
    assert.equal(doc.smoke, true);
    // Upstream's failures are findings about upstream (reported, not failures of the bench).
    assert.deepEqual(doc.errors.filter((e: { link: string }) => e.link !== "upstream"), []);
    const byName = (name: string) => doc.links.find((l: { name: string }) => l.name === name);
    assert.equal(byName("default")?.available, true, "the default link always runs");

    const results: Record<string, unknown>[] = doc.results;
    const families = new Set(results.map((r) => r.case));
    for (const c of ["download", "upload", "aggregate", "echo", "dial", "isolation", "idle"]) {
      assert.ok(families.has(c), `no result for case ${c}`);
    }
    for (const frontend of ["http-connect", "grpc"]) {
      assert.ok(results.some((r) => r.frontend === frontend), `no result through ${frontend}`);
    }
    for (const r of results) {
      for (const key of ["direct", "tunnel", "ratio"]) {
        assert.equal(typeof r[key], "number", `${r.title}: ${key} is ${r[key]}`);
        assert.ok(Number.isFinite(r[key]), `${r.title}: ${key} is ${r[key]}`);
      }
    }
    // The latency cases ran twice, on fresh stacks, and their rows keep both rounds.
    for (const r of results.filter((r) => r.case === "echo" || r.case === "dial")) {
      const rounds = (r.details as { rounds?: unknown[] } | undefined)?.rounds;
      assert.equal(rounds?.length, 2, `${r.title} (${r.frontend}, ${r.link}): rounds`);
    }
    const loaded = results.find((r) => String(r.title).includes("while"));
    const round1 = (loaded?.details as { rounds: { details: { tunnel: { loadMBps: number } } }[] })
      .rounds[0]!;
    assert.ok(round1.details.tunnel.loadMBps > 0, "the loaded echo reports its load's MB/s");
    // The table is printed too, with upstream's columns.
    assert.match(
      text(out.stdout),
      /\|\s+direct \|\s+tunnel \|\s+ratio \|\s+upstream \|\s+knp\/up \|/,
    );
    if (UPSTREAM) checkUpstream(results);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
