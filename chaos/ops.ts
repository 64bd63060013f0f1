/**
 * One chaos client operation: dial through a frontend, exchange checksummed bytes both ways, and
 * classify the result. Every operation runs under an overall deadline; passing it is a violation.
 *
 * Outcomes: `exact` (every byte both ways verified, SHA-256 both ways), `error` (the connection
 * ended with an error, or short on the HTTP-CONNECT frontend, whose only end signal is EOF),
 * `cancelled` (the client gave up on purpose), or a `violation`: corrupt bytes, a wrong digest, a
 * clean end of stream short of the data with no error on the gRPC frontend when the backend did not
 * reset the connection (a silent short read), or the deadline passed.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { type ChaosBackend, encodeHeader, NO_RESET, type Transfer } from "./backend.ts";
import { dialConnect, dialGrpc, type Duplex, type Frontend } from "./duplex.ts";
import { Prng, seededBytes } from "./prng.ts";

/** What a client does. */
export type OpKind = "transfer" | "reset" | "stall" | "cancel-dial" | "cancel-mid" | "refused";
export const OP_KINDS: readonly OpKind[] = [
  "transfer",
  "reset",
  "stall",
  "cancel-dial",
  "cancel-mid",
  "refused",
];
const OP_WEIGHTS = [10, 2, 2, 1, 2, 1];

/** A planned operation (all choices made from the seed). */
export interface OpPlan {
  kind: OpKind;
  frontend: Frontend;
  transfer: Transfer;
  /** Down bytes after which a stall or cancel happens. */
  at: number;
  /** Stall length, or cancel-dial delay. */
  waitMs: number;
}

/** The result of one operation. */
export interface Outcome {
  plan: OpPlan;
  status: "exact" | "error" | "cancelled" | "violation";
  detail: string;
  ms: number;
}

/** Where the operations go. */
export interface OpEnv {
  udsPath: string;
  /** The frontend the server runs now. */
  frontend: () => Frontend;
  backend: ChaosBackend;
  deadlineMs: number;
  maxBytes: number;
}

/** Plans the next operation of a worker from its PRNG. */
export function planOp(rng: Prng, token: number, frontend: Frontend, maxBytes: number): OpPlan {
  const kind = rng.pick(OP_KINDS, OP_WEIGHTS);
  const upLen = rng.size(maxBytes);
  const downLen = Math.max(kind === "transfer" ? 0 : 1, rng.size(maxBytes));
  const at = rng.int(0, downLen - 1 < 0 ? 0 : downLen - 1);
  return {
    kind,
    frontend,
    transfer: {
      token,
      upSeed: rng.fork(),
      upLen,
      downSeed: rng.fork(),
      downLen,
      resetAt: kind === "reset" ? at : NO_RESET,
    },
    at,
    waitMs: kind === "stall" ? rng.int(200, 2_000) : rng.int(0, 30),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A broken invariant (as opposed to a connection that failed). */
export class Violation extends Error {}
class Cancelled extends Error {}

async function dial(env: OpEnv, plan: OpPlan, signal: AbortSignal): Promise<Duplex> {
  const address = plan.kind === "refused" ? "127.0.0.1:1" : env.backend.address;
  if (plan.frontend === "grpc") return await dialGrpc(env.udsPath, address, signal, 10_000);
  return await dialConnect(env.udsPath, address, signal);
}

async function sendUp(conn: Duplex, t: Transfer): Promise<Uint8Array> {
  const up = seededBytes(t.upSeed, t.upLen);
  await conn.write(encodeHeader(t));
  for (let off = 0; off < up.length; off += 48 * 1024) {
    await conn.write(up.subarray(off, off + 48 * 1024));
  }
  return new Uint8Array(createHash("sha256").update(up).digest());
}

/** Reads the down stream and the digest, checking each byte; stalls or cancels per the plan. */
async function receive(conn: Duplex, plan: OpPlan, env: OpEnv): Promise<Uint8Array> {
  const t = plan.transfer;
  const expected = seededBytes(t.downSeed, t.downLen);
  const got = new Uint8Array(t.downLen + 32);
  let have = 0;
  let acted = false;
  while (have < got.length) {
    if (!acted && have >= plan.at) {
      acted = true;
      if (plan.kind === "stall") await sleep(plan.waitMs);
      if (plan.kind === "cancel-mid") throw new Cancelled(`closed after ${have} bytes`);
    }
    const chunk = await conn.read();
    if (chunk === null) return shortRead(conn, plan, env, have);
    if (have + chunk.length > got.length) throw new Violation("more bytes than sent");
    got.set(chunk, have);
    for (let i = 0; i < chunk.length && have + i < t.downLen; i++) {
      if (chunk[i] !== expected[have + i]) throw new Violation(`corrupt byte ${have + i}`);
    }
    have += chunk.length;
  }
  return got.subarray(t.downLen);
}

function shortRead(conn: Duplex, plan: OpPlan, env: OpEnv, have: number): never {
  const t = plan.transfer;
  const what = `EOF after ${have} of ${t.downLen + 32} bytes`;
  if (plan.kind === "reset" || env.backend.resets.has(t.token)) throw new Error(`${what} (reset)`);
  if (plan.frontend === "http-connect") throw new Error(`${what} (http-connect)`);
  if (conn.closeError() !== "") throw new Error(`${what}: ${conn.closeError()}`);
  throw new Violation(`silent short read: ${what}, no close error`);
}

/** Exchanges and verifies the bytes of `plan` over `conn`; throws {@linkcode Violation}. */
export async function exchange(conn: Duplex, plan: OpPlan, env: OpEnv): Promise<string> {
  const sending = sendUp(conn, plan.transfer);
  sending.catch(() => {});
  const digest = await receive(conn, plan, env);
  const sent = await sending;
  if (env.backend.corrupt.has(plan.transfer.token)) throw new Violation("corrupt upstream bytes");
  if (!digest.every((b, i) => b === sent[i])) throw new Violation("upstream digest mismatch");
  if (plan.kind === "reset") throw new Violation("a reset connection completed");
  return `${plan.transfer.upLen}/${plan.transfer.downLen} bytes exact`;
}

/** Where an operation is, for a deadline report. */
interface Progress {
  phase: "dial" | "exchange" | "close";
  conn?: Duplex;
}

async function attempt(env: OpEnv, plan: OpPlan, signal: AbortSignal, progress: Progress) {
  const ctl = new AbortController();
  signal.addEventListener("abort", () => ctl.abort(), { once: true });
  if (plan.kind === "cancel-dial") setTimeout(() => ctl.abort(new Cancelled("dial")), plan.waitMs);
  let conn: Duplex;
  try {
    conn = await dial(env, plan, ctl.signal);
  } catch (err) {
    if (plan.kind === "cancel-dial" && ctl.signal.aborted) throw new Cancelled("dial cancelled");
    throw err;
  }
  progress.conn = conn;
  progress.phase = "exchange";
  try {
    if (plan.kind === "refused") throw new Violation("a dial to a closed port succeeded");
    if (plan.kind === "cancel-dial") throw new Cancelled("dial completed before the cancel");
    return await exchange(conn, plan, env);
  } finally {
    progress.phase = "close";
    conn.close();
    await conn.closed;
  }
}

/** Runs one operation under the overall deadline. */
export async function runOp(env: OpEnv, plan: OpPlan): Promise<Outcome> {
  const started = Date.now();
  const ctl = new AbortController();
  const progress: Progress = { phase: "dial" };
  const work = attempt(env, plan, ctl.signal, progress);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<"deadline">((resolve) => {
    timer = setTimeout(() => resolve("deadline"), env.deadlineMs);
  });
  const result = await Promise.race([work.then((d) => ({ d }), (e: unknown) => ({ e })), deadline]);
  clearTimeout(timer);
  const ms = Date.now() - started;
  if (result === "deadline") {
    ctl.abort();
    progress.conn?.close();
    work.catch(() => {});
    const detail = `deadline ${env.deadlineMs} ms passed during ${progress.phase}`;
    return { plan, status: "violation", detail, ms };
  }
  if ("d" in result) return { plan, status: "exact", detail: result.d, ms };
  const e = result.e;
  const detail = e instanceof Error ? e.message : String(e);
  if (e instanceof Violation) return { plan, status: "violation", detail, ms };
  if (e instanceof Cancelled) return { plan, status: "cancelled", detail, ms };
  return { plan, status: "error", detail, ms };
}
