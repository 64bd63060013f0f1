/**
 * `deno task fuzz`: bounded, seeded fuzzing of knp's parsers and codecs.
 *
 * Targets (one module each under `fuzz/targets/`, where each module documents its inputs and
 * invariants in full):
 *
 * - `packet`: the protobuf Packet codec (`decodePacket`, `encodePacket`, `encodedLength`).
 *   Bytes decode to a packet or throw `PacketDecodeError`; valid packets round-trip; a decoded
 *   packet's encoding is a fixpoint.
 * - `connect`: the HTTP-CONNECT head parser (`parseConnectHead`, `validConnectTarget`). A head
 *   parses to a valid target or is refused with the frontend's HTTP error (400/405), nothing else.
 * - `header`: gRPC metadata helpers (`parseAgentIdentifiers`, `validateAgentIdentifiers`,
 *   `queryParseError`, `removePortFromHost`, flow-control parse/format) and the agent's
 *   `--agent-identifiers` check, which must agree with `validateAgentIdentifiers`.
 * - `flags`: `parseServerOptions`, `parseAgentOptions` (cli/flags.ts and the flag value syntaxes)
 *   and `parseLeaseLabels`. Any argv gives options, help, or a `KnpError` `INVALID_FLAG`.
 * - `ws`: the WebSocket `FrameParser` and the link's batch decoder `unframe`. Frames or a typed
 *   failure (close code 1002/1007/1009), the same events however the bytes are chunked; batches
 *   decode to packets or throw a typed decode error.
 *
 * Generators are structure-aware: they build valid inputs and mutate them (bit flips, byte
 * inserts and deletes, truncation, splicing, duplicated runs, varint and length fields set to
 * edge values, huge lengths), and also draw plain random bytes.
 *
 * Each case `i` of a run draws from its own generator seeded by (seed, i), so a case replays
 * alone. A crash is any exception the invariants do not allow; a hang is a case slower than
 * `--hang-ms` three times in a row, or one that never ends (a watchdog stops the worker running the
 * target when the case index has not moved for `--stall-seconds`). Each failure is saved as
 * `fuzz/regressions/<target>/<seed>-<case>.json` (the input as JSON, bytes as hex, with the seed,
 * case and error); `tests/fuzz_test.ts` replays every saved file and a short fixed-seed run of
 * each target under `deno task test`.
 *
 * Usage (each target runs in its own worker; the exit code is 1 when anything failed):
 *
 * ```sh
 * deno task fuzz                          # 1,000,000 cases per target, random seed (printed)
 * deno task fuzz --seed 1234              # replay a whole run
 * deno task fuzz --seed 1234 --target ws --case 5678   # replay one case; prints its input
 * deno task fuzz --cases 50000 --seconds 60 --target packet,ws --jobs 2
 * ```
 *
 * Options: `--seed N` (default random), `--cases N` per target (default 1000000), `--seconds N`
 * per target (default 600), `--target a,b`, `--case I` (run only case I), `--hang-ms N` (default
 * 100), `--stall-seconds N` (default 10), `--jobs N` targets at once (default 1), `--no-save`.
 *
 * @module
 */
import { parseSeed, randomSeed, Rng } from "./rng.ts";
import { type Failure, type RunResult, saveRegression, timeCase } from "./runner.ts";
import { targetNamed, TARGETS } from "./targets.ts";
import type { AnyTarget } from "./target.ts";
import type { WorkerJob } from "./worker.ts";

const encoder = new TextEncoder();

function print(line: string): void {
  Deno.stdout.writeSync(encoder.encode(line + "\n"));
}

/** Command-line options of the fuzzer. */
interface FuzzOptions {
  seed: number;
  cases: number;
  seconds: number;
  targets: AnyTarget[];
  only: number | undefined;
  hangMs: number;
  stallSeconds: number;
  jobs: number;
  save: boolean;
}

function numberArg(name: string, text: string | undefined): number {
  const n = Number(text);
  if (text === undefined || !Number.isFinite(n) || n < 0) {
    throw new RangeError(`--${name} needs a non-negative number, got ${JSON.stringify(text)}`);
  }
  return n;
}

function parseArgs(args: readonly string[]): FuzzOptions {
  const o: FuzzOptions = {
    seed: randomSeed(),
    cases: 1_000_000,
    seconds: 600,
    targets: [...TARGETS],
    only: undefined,
    hangMs: 100,
    stallSeconds: 10,
    jobs: 1,
    save: true,
  };
  for (let i = 0; i < args.length; i++) {
    const [flag, inline] = args[i]!.split(/=(.*)/s);
    const value = () => inline ?? args[++i];
    switch (flag) {
      case "--seed":
        o.seed = parseSeed(value() ?? "");
        break;
      case "--cases":
        o.cases = Math.floor(numberArg("cases", value()));
        break;
      case "--seconds":
        o.seconds = numberArg("seconds", value());
        break;
      case "--target":
        o.targets = (value() ?? "").split(",").map(targetNamed);
        break;
      case "--case":
        o.only = Math.floor(numberArg("case", value()));
        break;
      case "--hang-ms":
        o.hangMs = numberArg("hang-ms", value());
        break;
      case "--stall-seconds":
        o.stallSeconds = numberArg("stall-seconds", value());
        break;
      case "--jobs":
        o.jobs = Math.max(1, Math.floor(numberArg("jobs", value())));
        break;
      case "--no-save":
        o.save = false;
        break;
      default:
        throw new RangeError(`unknown option ${args[i]}`);
    }
  }
  return o;
}

/** Runs one target in a worker; a case that stalls for `stallSeconds` ends the worker. */
function runInWorker(target: AnyTarget, o: FuzzOptions): Promise<RunResult> {
  const progress = new SharedArrayBuffer(4);
  const index = new Int32Array(progress);
  index[0] = -1;
  const worker = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
  const t0 = performance.now();
  return new Promise((resolve) => {
    let last = -1;
    let still = 0;
    const finish = (result: RunResult) => {
      clearInterval(watchdog);
      worker.terminate();
      resolve(result);
    };
    // The watchdog: the only timer here, and it only looks for a case that never ends.
    const watchdog = setInterval(() => {
      const now = Atomics.load(index, 0);
      still = now === last ? still + 1 : 0;
      last = now;
      if (still < o.stallSeconds) return;
      finish(stalled(target, o.seed, now, performance.now() - t0, o.stallSeconds));
    }, 1000);
    worker.onmessage = (e: MessageEvent<RunResult>) => finish(e.data);
    worker.onerror = (e) => {
      e.preventDefault();
      finish(stalled(target, o.seed, Atomics.load(index, 0), performance.now() - t0, 0, e.message));
    };
    const job: WorkerJob = {
      target: target.name,
      seed: o.seed,
      start: 0,
      cases: o.cases,
      maxMs: o.seconds * 1000,
      hangMs: o.hangMs,
      progress,
    };
    worker.postMessage(job);
  });
}

/** The result of a worker stopped at case `i` (the input is drawn again here). */
function stalled(
  target: AnyTarget,
  seed: number,
  i: number,
  ms: number,
  seconds: number,
  error?: string,
): RunResult {
  const input = i < 0 ? null : target.toJson(target.generate(new Rng(seed, i)));
  const message = error ?? `case did not finish within ${seconds} s`;
  const failure: Failure = { target: target.name, seed, case: i, kind: "hang", message, input };
  if (error !== undefined) failure.kind = "crash";
  return {
    target: target.name,
    seed,
    cases: i + 1,
    ms,
    slowestMs: ms,
    slowestCase: i,
    rerun: 0,
    failures: [failure],
  };
}

function report(r: RunResult): void {
  const rate = r.cases / (r.ms / 1000);
  print(
    `${r.target.padEnd(7)} ${String(r.cases).padStart(8)} cases in ${(r.ms / 1000).toFixed(1)} s` +
      ` (${Math.round(rate)}/s; slowest: case ${r.slowestCase}, ${r.slowestMs.toFixed(1)} ms): ` +
      `${r.failures.length} failure(s); ${r.rerun} case(s) re-run after a slow first run`,
  );
}

async function runAll(o: FuzzOptions): Promise<RunResult[]> {
  const queue = [...o.targets];
  const results: RunResult[] = [];
  const lane = async () => {
    for (let t = queue.shift(); t !== undefined; t = queue.shift()) {
      const result = await runInWorker(t, o);
      report(result);
      results.push(result);
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.jobs, queue.length) }, lane));
  return results;
}

function replayOne(o: FuzzOptions, i: number): boolean {
  let ok = true;
  for (const target of o.targets) {
    const input = target.generate(new Rng(o.seed, i));
    const [err, ms] = timeCase(target, input);
    print(`${target.name} case ${i}: ${JSON.stringify(target.toJson(input))}`);
    print(
      `  ${err === undefined ? "ok" : `FAILED: ${err instanceof Error ? err.stack : err}`}` +
        ` (${ms.toFixed(2)} ms)`,
    );
    ok &&= err === undefined && ms <= o.hangMs;
  }
  return ok;
}

async function main(args: readonly string[]): Promise<number> {
  let o: FuzzOptions;
  try {
    o = parseArgs(args);
  } catch (err) {
    print(`usage error: ${err instanceof Error ? err.message : err} (see fuzz/main.ts)`);
    return 2;
  }
  print(`knp fuzz: seed ${o.seed} (replay with --seed ${o.seed})`);
  if (o.only !== undefined) return replayOne(o, o.only) ? 0 : 1;
  print(`${o.cases} cases and at most ${o.seconds} s per target; hang bound ${o.hangMs} ms`);
  const results = await runAll(o);
  const failures = results.flatMap((r) => r.failures);
  for (const f of failures) {
    const where = o.save && f.input !== null ? await saveRegression(f) : "(not saved)";
    print(`${f.kind.toUpperCase()} ${f.target} seed ${f.seed} case ${f.case}: ${where}`);
    print(`  ${f.message.split("\n").slice(0, 4).join("\n  ")}`);
  }
  print(failures.length === 0 ? "no crashes or hangs" : `${failures.length} failure(s)`);
  return failures.length === 0 ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
