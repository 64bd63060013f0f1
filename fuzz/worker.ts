/**
 * Worker entry of the fuzzer: runs one target (see `runner.ts`) and posts its {@linkcode RunResult}.
 * The case index is kept in a shared buffer so the main thread can spot a case that never ends.
 *
 * @module
 */
import { runTarget } from "./runner.ts";
import { targetNamed } from "./targets.ts";

/** The message that starts a worker. */
export interface WorkerJob {
  target: string;
  seed: number;
  start: number;
  cases: number;
  maxMs: number;
  hangMs: number;
  progress: SharedArrayBuffer;
}

const scope = self as unknown as {
  onmessage: ((e: MessageEvent<WorkerJob>) => void) | null;
  postMessage(message: unknown): void;
  close(): void;
};

scope.onmessage = (e) => {
  const job = e.data;
  const result = runTarget(targetNamed(job.target), {
    seed: job.seed,
    start: job.start,
    cases: job.cases,
    maxMs: job.maxMs,
    hangMs: job.hangMs,
    progress: new Int32Array(job.progress),
  });
  scope.postMessage(result);
  scope.close();
};
