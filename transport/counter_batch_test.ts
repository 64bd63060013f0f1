import assert from "node:assert/strict";
import { CounterBatch } from "./counter_batch.ts";

/** Everything `batch` hands over in one drain. */
function drained(batch: CounterBatch): [string, string, number][] {
  const seen: [string, string, number][] = [];
  batch.drain((a, b, n) => seen.push([a, b, n]));
  return seen;
}

Deno.test("CounterBatch hands over each pair's sum once and then only new counts", () => {
  const batch = new CounterBatch();
  batch.add("from_client", "DATA");
  batch.add("from_client", "DATA");
  batch.add("to_client", "DATA", 5);
  batch.add("from_client", "DIAL_REQ");
  assert.deepEqual(drained(batch), [
    ["from_client", "DATA", 2],
    ["to_client", "DATA", 5],
    ["from_client", "DIAL_REQ", 1],
  ]);
  assert.deepEqual(drained(batch), [], "drained counts are not handed over again");
  batch.add("to_client", "DATA", 2);
  assert.deepEqual(drained(batch), [["to_client", "DATA", 2]]);
});

Deno.test("CounterBatch keeps counts of many pairs and large byte sums exact", () => {
  const batch = new CounterBatch();
  for (let i = 0; i < 100; i++) batch.add(`segment${i % 7}`, `type${i}`, i + 1);
  batch.add("bytes", "", 2 ** 40);
  batch.add("bytes", "", 3);
  const sums = new Map(drained(batch).map(([a, b, n]) => [`${a}/${b}`, n]));
  assert.equal(sums.size, 101);
  assert.equal(sums.get("segment3/type10"), 11);
  assert.equal(sums.get("bytes/"), 2 ** 40 + 3);
});
