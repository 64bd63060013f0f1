/**
 * The benchmark suite keeps working: `bench/main.ts --smoke` runs every case at tiny sizes
 * against real server and agent processes and writes its JSON document.
 *
 * No timing assertions: only that the run succeeds and every result is a number with a ratio.
 *
 * @module
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

Deno.test("bench: the smoke run measures every case on the direct and the tunnel path", async () => {
  const dir = await Deno.makeTempDir({ prefix: "knp-bench-smoke-" });
  try {
    const json = `${dir}/bench.json`;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "bench/main.ts", "--smoke", "--json", json],
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
    assert.deepEqual(doc.errors, []);
    const grpc = doc.links.find((l: { name: string }) => l.name === "grpc");
    assert.equal(grpc?.available, true, "the grpc link always runs");

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
    // The table is printed too.
    assert.match(text(out.stdout), /\|\s+direct \|\s+tunnel \|\s+ratio \|/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
