/**
 * The chaos suite's backend (the agents' endpoint): a loopback TCP server speaking a small
 * checksummed protocol, so each connection's bytes are verified end to end in both directions.
 *
 * The client sends a {@linkcode HEADER_SIZE}-byte header (magic, token, up seed and length, down
 * seed and length, reset point), then `upLen` bytes of {@linkcode seededBytes}(upSeed). The backend
 * concurrently sends `downLen` bytes of `seededBytes(downSeed)`; once it has sent them and read
 * all `upLen` bytes it sends the SHA-256 of what it read (32 bytes) and waits for the client to
 * close. With a reset point it closes abruptly after sending that many bytes (an endpoint reset)
 * and records the token, so the client can tell a reset it asked for from a silent truncation.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { seededBytes } from "./prng.ts";

/** Bytes of the request header. */
export const HEADER_SIZE = 28;
const MAGIC = 0x4b4e5043; // "KNPC"
/** `resetAt` meaning "never reset". */
export const NO_RESET = 0xffffffff;

/** What a connection carries. */
export interface Transfer {
  token: number;
  upSeed: number;
  upLen: number;
  downSeed: number;
  downLen: number;
  resetAt: number;
}

/** Encodes the request header. */
export function encodeHeader(t: Transfer): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE);
  const view = new DataView(out.buffer);
  [MAGIC, t.token, t.upSeed, t.upLen, t.downSeed, t.downLen, t.resetAt].forEach((v, i) =>
    view.setUint32(i * 4, v >>> 0)
  );
  return out;
}

function decodeHeader(bytes: Uint8Array): Transfer | undefined {
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_SIZE);
  const at = (i: number) => view.getUint32(i * 4);
  if (at(0) !== MAGIC) return undefined;
  return {
    token: at(1),
    upSeed: at(2),
    upLen: at(3),
    downSeed: at(4),
    downLen: at(5),
    resetAt: at(6),
  };
}

/** A running chaos backend. */
export interface ChaosBackend extends AsyncDisposable {
  address: string;
  /** Connections open now (each is one agent endpoint connection). */
  readonly open: number;
  readonly accepted: number;
  /** Tokens of connections the backend reset on purpose. */
  readonly resets: ReadonlySet<number>;
  /** Tokens whose upstream bytes differed from the seeded stream (corruption). */
  readonly corrupt: ReadonlySet<number>;
  /** Resolves once no connection is open (at once if none is). */
  idle(): Promise<void>;
}

async function readFull(conn: Deno.Conn, out: Uint8Array): Promise<boolean> {
  let have = 0;
  while (have < out.length) {
    const n = await conn.read(out.subarray(have));
    if (n === null) return false;
    have += n;
  }
  return true;
}

/** Reads `upLen` bytes, checking each against the seeded stream; returns the SHA-256 or null. */
async function readUp(conn: Deno.Conn, t: Transfer, corrupt: Set<number>) {
  const expected = seededBytes(t.upSeed, t.upLen);
  const hash = createHash("sha256");
  const buf = new Uint8Array(64 * 1024);
  let have = 0;
  while (have < t.upLen) {
    const n = await conn.read(buf.subarray(0, Math.min(buf.length, t.upLen - have)));
    if (n === null) return null;
    const chunk = buf.subarray(0, n);
    for (let i = 0; i < n; i++) {
      if (chunk[i] !== expected[have + i]) corrupt.add(t.token);
    }
    hash.update(chunk);
    have += n;
  }
  return new Uint8Array(hash.digest());
}

/** Sends the down stream; false when it reset at `resetAt` instead. */
async function writeDown(conn: Deno.Conn, t: Transfer): Promise<boolean> {
  const bytes = seededBytes(t.downSeed, t.downLen);
  const end = Math.min(t.downLen, t.resetAt);
  for (let off = 0; off < end;) {
    off += await conn.write(bytes.subarray(off, Math.min(end, off + 65536)));
  }
  return t.resetAt >= t.downLen;
}

async function serveOne(conn: Deno.Conn, resets: Set<number>, corrupt: Set<number>) {
  const head = new Uint8Array(HEADER_SIZE);
  if (!await readFull(conn, head)) return;
  const t = decodeHeader(head);
  if (t === undefined) return;
  const up = readUp(conn, t, corrupt);
  up.catch(() => {}); // a reset closes the connection under the pending read
  if (!await writeDown(conn, t)) {
    resets.add(t.token);
    return;
  }
  const digest = await up;
  if (digest === null) return;
  await conn.write(digest);
  // Wait for the client to close; it sends nothing more.
  await conn.read(new Uint8Array(1));
}

/** Starts the backend on 127.0.0.1, port 0. */
export function startChaosBackend(): ChaosBackend {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const resets = new Set<number>();
  const corrupt = new Set<number>();
  let idleWaiters: (() => void)[] = [];
  let accepted = 0;
  const tasks = new Set<Promise<void>>();
  const serve = async (conn: Deno.Conn) => {
    try {
      await serveOne(conn, resets, corrupt);
    } catch { /* reset by the agent side */ }
    try {
      conn.close();
    } catch { /* closed */ }
    conns.delete(conn);
    if (conns.size === 0) {
      for (const w of idleWaiters) w();
      idleWaiters = [];
    }
  };
  const accepting = (async () => {
    for await (const conn of listener) {
      accepted++;
      conns.add(conn);
      const task = serve(conn);
      tasks.add(task);
      task.finally(() => tasks.delete(task));
    }
  })().catch(() => {});
  return {
    address: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    get open() {
      return conns.size;
    },
    get accepted() {
      return accepted;
    },
    resets,
    corrupt,
    idle() {
      if (conns.size === 0) return Promise.resolve();
      return new Promise((resolve) => idleWaiters.push(resolve));
    },
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await accepting;
      await Promise.all([...tasks]);
    },
  };
}
