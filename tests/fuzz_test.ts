/**
 * The fuzzer under `deno task test`: every saved regression input of `fuzz/regressions/` replays
 * cleanly, and a short run with a fixed seed (20,000 cases per target) finds nothing. Hangs are
 * left to `deno task fuzz` (here only crashes count, so a loaded CI machine cannot make this
 * flaky). Also checks the fuzzer itself: cases are reproducible, crashes are caught and saved.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Rng } from "../fuzz/rng.ts";
import { mutate } from "../fuzz/mutate.ts";
import {
  type Failure,
  loadRegressions,
  runTarget,
  saveRegression,
  timeCase,
} from "../fuzz/runner.ts";
import { byteTarget, fromHex, InvariantError, toHex } from "../fuzz/target.ts";
import { TARGETS } from "../fuzz/targets.ts";

const SEED = 20261130;
const CASES = 20_000;

for (const target of TARGETS) {
  Deno.test(`fuzz ${target.name}: the saved regression inputs replay cleanly`, async () => {
    const regressions = await loadRegressions(target.name);
    assert.ok(regressions.length > 0, `no regression inputs for ${target.name}`);
    for (const { file, record } of regressions) {
      assert.equal(record.target, target.name, file);
      const [err] = timeCase(target, target.fromJson(record.input));
      assert.equal(err, undefined, `${file}: ${err instanceof Error ? err.stack : err}`);
    }
  });

  Deno.test(`fuzz ${target.name}: ${CASES} cases with seed ${SEED}`, () => {
    const result = runTarget(target, {
      seed: SEED,
      cases: CASES,
      maxMs: Infinity,
      hangMs: Infinity,
    });
    assert.equal(result.cases, CASES);
    assert.deepEqual(result.failures.map((f) => `case ${f.case}: ${f.message}`), []);
  });
}

Deno.test("fuzz: a case is drawn from its seed and index alone", () => {
  for (const target of TARGETS) {
    const a = JSON.stringify(target.toJson(target.generate(new Rng(7, 12345))));
    const b = JSON.stringify(target.toJson(target.generate(new Rng(7, 12345))));
    const c = JSON.stringify(target.toJson(target.generate(new Rng(7, 12346))));
    assert.equal(a, b, target.name);
    assert.notEqual(a, c, target.name);
    const input = target.generate(new Rng(7, 99));
    const back = target.fromJson(JSON.parse(JSON.stringify(target.toJson(input))));
    assert.equal(JSON.stringify(target.toJson(back)), JSON.stringify(target.toJson(input)));
  }
});

/** A target that breaks on inputs starting with 0xff, and spins on inputs starting with 0xfe. */
const broken = byteTarget("broken", (rng) => rng.bytes(rng.range(1, 4)), (input) => {
  if (input[0] === 0xff) throw new InvariantError("starts with 0xff");
  if (input[0] === 0xfe) throw new TypeError("an unexpected exception");
  if (input[0] === 0xfd) {
    const t0 = performance.now();
    while (performance.now() - t0 < 3); // a slow case: at least 3 ms, over the 1 ms bound
  }
});

Deno.test("fuzz: crashes and slow cases are reported, with their seed and case", () => {
  const result = runTarget(broken, {
    seed: 1,
    cases: 5000,
    maxMs: Infinity,
    hangMs: 1,
    maxFailures: 1000,
  });
  assert.equal(result.cases, 5000);
  const kinds = new Map<number, Set<string>>();
  for (const f of result.failures) {
    const first = fromHex(f.input as string).at(0)!;
    kinds.set(first, (kinds.get(first) ?? new Set()).add(f.kind));
    assert.deepEqual(broken.generate(new Rng(1, f.case)), fromHex(f.input));
  }
  assert.deepEqual(kinds.get(0xff), new Set(["crash"]));
  assert.deepEqual(kinds.get(0xfe), new Set(["crash"]));
  assert.deepEqual(kinds.get(0xfd), new Set(["hang"]));
  assert.equal(kinds.size, 3);
});

Deno.test("fuzz: a failure is saved and loaded back", async () => {
  const dir = await Deno.makeTempDir({ prefix: "knp-fuzz-" });
  try {
    const failure: Failure = {
      target: "broken",
      seed: 3,
      case: 4,
      kind: "crash",
      message: "m",
      input: toHex(Uint8Array.of(0xff)),
    };
    const url = new URL(`file://${dir}/`);
    const path = await saveRegression(failure, url);
    assert.ok(path.endsWith("/broken/3-4.json"));
    const loaded = await loadRegressions("broken", url);
    assert.deepEqual(loaded.map((r) => r.record), [failure]);
    assert.deepEqual(await loadRegressions("absent", url), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fuzz: mutations stay deterministic and produce bytes", () => {
  const base = Uint8Array.of(8, 4, 0x22, 2, 8, 1);
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const out = mutate(new Rng(5, i), base, Uint8Array.of(1, 2, 3));
    assert.ok(out instanceof Uint8Array);
    assert.deepEqual(mutate(new Rng(5, i), base, Uint8Array.of(1, 2, 3)), out);
    seen.add(toHex(out));
  }
  assert.ok(seen.size > 100, `only ${seen.size} distinct mutations`);
  assert.deepEqual(base, Uint8Array.of(8, 4, 0x22, 2, 8, 1));
});
