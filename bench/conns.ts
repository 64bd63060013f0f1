/**
 * The measuring client's connections: one small interface over the three ways to reach a backend.
 *
 * - `direct`: `Deno.connect` to the backend (the physical limit).
 * - `http-connect`: a raw `CONNECT host:port HTTP/1.1` over the server's UDS, then raw bytes with
 *   `read`/`write` loops (what kube-apiserver does, and the cheapest client).
 * - `grpc`: the client library (`createSingleUseTunnel` over the UDS, one gRPC connection per
 *   dial, as kube-apiserver does), read through its web streams.
 *
 * @module
 */

import { createSingleUseTunnel } from "@knp/client";
import type { TunnelConn } from "@knp/client";
import { CHUNK } from "./wire.ts";

/** Where a connection goes: straight to a backend port or through a server's UDS frontend. */
export type Target =
  | { via: "direct"; port: number }
  | { via: "http-connect" | "grpc"; udsPath: string; port: number };

/** A connection as the measurements see it. */
export interface BenchConn {
  /** The next bytes received (a view valid until the next call), or null at the end. */
  read(): Promise<Uint8Array | null>;
  /** Writes all of `bytes`; the buffer may be reused once this resolves. */
  write(bytes: Uint8Array): Promise<void>;
  close(): void;
}

/** A raw socket (`Deno.Conn`) with its own read buffer, allocated on first read. */
class RawConn implements BenchConn {
  #conn: Deno.Conn;
  #buf: Uint8Array | undefined;
  #leftover: Uint8Array | undefined;
  #closed = false;

  constructor(conn: Deno.Conn, leftover?: Uint8Array) {
    this.#conn = conn;
    this.#leftover = leftover && leftover.byteLength > 0 ? leftover : undefined;
  }

  async read(): Promise<Uint8Array | null> {
    if (this.#leftover) {
      const out = this.#leftover;
      this.#leftover = undefined;
      return out;
    }
    this.#buf ??= new Uint8Array(CHUNK);
    const n = await this.#conn.read(this.#buf);
    return n === null ? null : this.#buf.subarray(0, n);
  }

  async write(bytes: Uint8Array): Promise<void> {
    while (bytes.byteLength > 0) bytes = bytes.subarray(await this.#conn.write(bytes));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
  }
}

/** A tunneled connection of the client library. */
class LibraryConn implements BenchConn {
  #conn: TunnelConn;
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #writer: WritableStreamDefaultWriter<Uint8Array>;

  constructor(conn: TunnelConn) {
    this.#conn = conn;
    this.#reader = conn.readable.getReader();
    this.#writer = conn.writable.getWriter();
  }

  async read(): Promise<Uint8Array | null> {
    const { value, done } = await this.#reader.read();
    return done ? null : value;
  }

  write(bytes: Uint8Array): Promise<void> {
    return this.#writer.write(bytes); // TunnelConn copies what it queues
  }

  close(): void {
    this.#conn.close();
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** One character per byte, so that text offsets are byte offsets. */
const latin1 = new TextDecoder("latin1");

let dataBeforeAnswer = 0;

/** CONNECTs so far whose tunnel data came before the proxy's `200` (an HTTP framing error). */
export function connectDataBeforeAnswer(): number {
  return dataBeforeAnswer;
}

function headEnd(buf: Uint8Array, length: number): number {
  for (let i = 3; i < length; i++) {
    if (buf[i] === 10 && buf[i - 1] === 13 && buf[i - 2] === 10 && buf[i - 3] === 13) return i + 1;
  }
  return -1;
}

/** CONNECT over the UDS; resolves once the proxy answered 200. */
async function httpConnect(udsPath: string, address: string): Promise<RawConn> {
  const conn = await Deno.connect({ transport: "unix", path: udsPath });
  try {
    const head = encoder.encode(`CONNECT ${address} HTTP/1.1\r\nHost: ${address}\r\n\r\n`);
    let bytes = head;
    while (bytes.byteLength > 0) bytes = bytes.subarray(await conn.write(bytes));
    const buf = new Uint8Array(4096);
    let length = 0;
    while (true) {
      const n = await conn.read(buf.subarray(length));
      if (n === null) {
        throw new Error(
          `proxy closed before answering: ${decoder.decode(buf.subarray(0, length))}`,
        );
      }
      length += n;
      const end = headEnd(buf, length);
      if (end >= 0) {
        // Bytes before the status line are tunnel data the proxy sent before its answer
        // (upstream's server races a server-first backend's bytes ahead of its 200): kept as
        // data, and counted.
        const at = Math.max(0, latin1.decode(buf.subarray(0, end)).indexOf("HTTP/1."));
        if (at > 0) dataBeforeAnswer++;
        const statusLine = decoder.decode(buf.subarray(at, end)).split("\r\n")[0]!;
        if (!/^HTTP\/1\.[01] 200 /.test(statusLine)) throw new Error(`CONNECT: ${statusLine}`);
        const rest = new Uint8Array(at + length - end);
        rest.set(buf.subarray(0, at));
        rest.set(buf.subarray(end, length), at);
        return new RawConn(conn, rest);
      }
      if (length === buf.length) throw new Error("CONNECT response head too large");
    }
  } catch (err) {
    try {
      conn.close();
    } catch { /* closed */ }
    throw err;
  }
}

/** Opens a connection to `target` (for tunnels: dial done and answered). */
export async function open(target: Target): Promise<BenchConn> {
  const address = `127.0.0.1:${target.port}`;
  switch (target.via) {
    case "direct": {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: target.port });
      conn.setNoDelay(true);
      return new RawConn(conn);
    }
    case "http-connect":
      return await httpConnect(target.udsPath, address);
    case "grpc": {
      const tunnel = createSingleUseTunnel({ udsPath: target.udsPath, userAgent: "knp-bench" });
      try {
        return new LibraryConn(await tunnel.dial("tcp", address));
      } catch (err) {
        tunnel.close();
        throw err;
      }
    }
  }
}

/** Opens `count` connections, at most `concurrency` at a time; stops at the first failure. */
export async function openMany(
  target: Target,
  count: number,
  concurrency: number,
): Promise<{ conns: BenchConn[]; error?: string | undefined }> {
  const conns: BenchConn[] = [];
  let next = 0;
  let error: string | undefined;
  const worker = async () => {
    while (error === undefined && next < count) {
      next++;
      try {
        conns.push(await open(target));
      } catch (err) {
        error ??= err instanceof Error ? err.message : String(err);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return { conns, error };
}

/** Reads until `n` bytes arrived (they are discarded); false if the connection ended first. */
export async function readCount(conn: BenchConn, n: number): Promise<boolean> {
  let got = 0;
  while (got < n) {
    const chunk = await conn.read();
    if (chunk === null) return false;
    got += chunk.byteLength;
  }
  return true;
}
