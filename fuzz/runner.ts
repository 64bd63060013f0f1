/**
 * The fuzz loop: draws case `i` of a run from `new Rng(seed, i)`, times the check, and records
 * crashes (any exception, including a broken invariant) and hangs (a case slower than the bound
 * three times in a row). Also reads and writes the regression files of `fuzz/regressions/`.
 *
 * @module
 */
import { Rng } from "./rng.ts";
import type { AnyTarget } from "./target.ts";

/** A case that crashed or hung. */
export interface Failure {
  /** Target name. */
  target: string;
  /** Seed of the run. */
  seed: number;
  /** Index of the case in the run (`--seed S --case I` replays it). */
  case: number;
  /** What went wrong; `corpus` marks a hand-picked input kept for replay. */
  kind: "crash" | "hang" | "corpus";
  /** The error, or the time taken. */
  message: string;
  /** The input, in the target's JSON form. */
  input: unknown;
}

/** Bounds of one run of one target. */
export interface RunOptions {
  /** Seed of the run. */
  seed: number;
  /** Index of the first case. @default 0 */
  start?: number;
  /** Number of cases. */
  cases: number;
  /** Stop after this many milliseconds (checked between cases). */
  maxMs: number;
  /** A case taking longer than this (three runs in a row) is a hang. */
  hangMs: number;
  /** Stop after this many failures. @default 10 */
  maxFailures?: number;
  /** When given, `progress[0]` is set to the index of the case being run (for a watchdog). */
  progress?: Int32Array;
}

/** What one run found. */
export interface RunResult {
  /** Target name. */
  target: string;
  /** Seed of the run. */
  seed: number;
  /** Cases run. */
  cases: number;
  /** Wall time in milliseconds. */
  ms: number;
  /** The slowest case's time in milliseconds. */
  slowestMs: number;
  /** The slowest case's index. */
  slowestCase: number;
  /** Cases whose first run was over the hang bound and were run again (then fast enough). */
  rerun: number;
  /** Crashes and hangs found. */
  failures: Failure[];
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause instanceof Error ? ` (cause: ${err.cause.stack ?? err.cause})` : "";
  return `${err.stack ?? err.message}${cause}`;
}

/** Runs `check` on `input`; returns the error, if any, and the time taken. */
export function timeCase(target: AnyTarget, input: unknown): [unknown, number] {
  const t0 = performance.now();
  try {
    target.check(input);
    return [undefined, performance.now() - t0];
  } catch (err) {
    return [err ?? new Error("threw a nullish value"), performance.now() - t0];
  }
}

/** Cases of the current run that had to be run again (see `runCase`). */
let rerun = 0;

/** Runs one case; returns its failure (if any) and its time. */
function runCase(
  target: AnyTarget,
  seed: number,
  i: number,
  hangMs: number,
): [Failure | undefined, number | undefined] {
  const base = { target: target.name, seed, case: i };
  let input: unknown;
  try {
    input = target.generate(new Rng(seed, i));
  } catch (err) {
    return [
      { ...base, kind: "crash", message: `generator: ${describe(err)}`, input: null },
      undefined,
    ];
  }
  let [err, ms] = timeCase(target, input);
  if (err === undefined && ms > hangMs) rerun++;
  // A slow case runs twice more and counts as a hang only if every run was slow (a GC pause or
  // a busy machine can stall one run, not a deterministic slow path).
  for (let retry = 0; retry < 2 && err === undefined && ms > hangMs; retry++) {
    [err, ms] = timeCase(target, input);
  }
  if (err !== undefined) {
    return [{ ...base, kind: "crash", message: describe(err), input: target.toJson(input) }, ms];
  }
  if (ms > hangMs) {
    const message = `took ${ms.toFixed(1)} ms, over the ${hangMs} ms bound (3 runs out of 3)`;
    return [{ ...base, kind: "hang", message, input: target.toJson(input) }, ms];
  }
  return [undefined, ms];
}

/** Runs cases `start … start + cases - 1` of `target`, bounded by count and wall time. */
export function runTarget(target: AnyTarget, options: RunOptions): RunResult {
  const { seed, cases, maxMs, hangMs, progress } = options;
  const start = options.start ?? 0;
  const maxFailures = options.maxFailures ?? 10;
  const failures: Failure[] = [];
  const t0 = performance.now();
  let slowestMs = 0;
  let slowestCase = start;
  rerun = 0;
  let done = 0;
  for (; done < cases; done++) {
    if ((done & 255) === 0 && performance.now() - t0 > maxMs) break;
    if (progress !== undefined) Atomics.store(progress, 0, start + done);
    const [failure, ms] = runCase(target, seed, start + done, hangMs);
    if (ms !== undefined && ms > slowestMs) [slowestMs, slowestCase] = [ms, start + done];
    if (failure === undefined) continue;
    failures.push(failure);
    if (failures.length >= maxFailures) {
      done++;
      break;
    }
  }
  const ms = performance.now() - t0;
  return { target: target.name, seed, cases: done, ms, slowestMs, slowestCase, rerun, failures };
}

/** Directory of the regression inputs of all targets. */
export const REGRESSIONS_DIR = new URL("./regressions/", import.meta.url);

/** A saved regression input. */
export interface Regression {
  /** Its file. */
  file: string;
  /** What was recorded (`input` is the target's JSON form). */
  record: Failure;
}

/** Saves a failure as `fuzz/regressions/<target>/<seed>-<case>.json`; returns the path. */
export async function saveRegression(failure: Failure, dir = REGRESSIONS_DIR): Promise<string> {
  const targetDir = new URL(`${failure.target}/`, dir);
  await Deno.mkdir(targetDir, { recursive: true });
  const file = new URL(`${failure.seed}-${failure.case}.json`, targetDir);
  await Deno.writeTextFile(file, JSON.stringify(failure, null, 2) + "\n");
  return file.pathname;
}

/** Every saved regression input of `target`. */
export async function loadRegressions(
  target: string,
  dir = REGRESSIONS_DIR,
): Promise<Regression[]> {
  const targetDir = new URL(`${target}/`, dir);
  const found: Regression[] = [];
  try {
    for await (const entry of Deno.readDir(targetDir)) {
      if (!entry.isFile || !entry.name.endsWith(".json")) continue;
      const file = new URL(entry.name, targetDir);
      found.push({ file: file.pathname, record: JSON.parse(await Deno.readTextFile(file)) });
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return found.sort((a, b) => a.file.localeCompare(b.file));
}
