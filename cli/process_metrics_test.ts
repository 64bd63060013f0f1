import assert from "node:assert/strict";
import { newRegistry } from "./process_metrics.ts";

function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

Deno.test("newRegistry shares the process metrics between registries, or leaves them out", async () => {
  const [a, b] = [newRegistry(true), newRegistry(true)];
  for (const text of [await a.metrics(), await b.metrics()]) {
    assert.ok(sample(text, "process_cpu_seconds_total")! > 0);
    assert.ok(sample(text, "process_resident_memory_bytes")! > 0);
    assert.ok(sample(text, "process_start_time_seconds")! > 0);
  }
  assert.equal(await newRegistry(false).metrics(), "\n");
});
