/**
 * The two frontends as one byte-connection shape for the chaos clients: the gRPC frontend over
 * the UDS through the client library ({@linkcode dialGrpc}), and HTTP-CONNECT over the UDS with a
 * raw CONNECT request ({@linkcode dialConnect}).
 *
 * @module
 */

import { createSingleUseTunnel } from "@knp/client";

/** A proxied connection. */
export interface Duplex {
  /** Next bytes, or null at a clean end of stream; throws when the connection failed. */
  read(): Promise<Uint8Array | null>;
  write(bytes: Uint8Array): Promise<void>;
  /** Closes the connection (idempotent); `closed` settles once it is closed. */
  close(): void;
  readonly closed: Promise<void>;
  /** The error the proxy reported with its close (gRPC frontend), or "". */
  closeError(): string;
}

/** Which frontend a client uses. */
export type Frontend = "grpc" | "http-connect";

/** Dials `address` through the gRPC frontend at `udsPath`. */
export async function dialGrpc(
  udsPath: string,
  address: string,
  signal: AbortSignal,
  timeoutMs: number,
): Promise<Duplex> {
  const tunnel = createSingleUseTunnel({ udsPath });
  let conn;
  try {
    conn = await tunnel.dial("tcp", address, { signal, timeoutMs, closeTimeoutMs: 5_000 });
  } catch (err) {
    tunnel.close();
    throw err;
  }
  const reader = conn.readable.getReader();
  const writer = conn.writable.getWriter();
  writer.closed.catch(() => {});
  const c = conn;
  return {
    async read() {
      const { value, done } = await reader.read();
      return done ? null : value;
    },
    write: (bytes) => writer.write(bytes),
    close() {
      c.close();
      tunnel.close();
    },
    closed: Promise.all([c.closed, tunnel.done]).then(() => {}),
    closeError: () => c.closeError,
  };
}

function headEnd(buf: Uint8Array): number {
  for (let i = 3; i < buf.length; i++) {
    if (buf[i] === 10 && buf[i - 1] === 13 && buf[i - 2] === 10 && buf[i - 3] === 13) return i + 1;
  }
  return -1;
}

/** Reads the CONNECT response head; returns the bytes after it. */
async function readHead(conn: Deno.Conn, address: string): Promise<Uint8Array> {
  let buf = new Uint8Array(0);
  const chunk = new Uint8Array(4096);
  while (true) {
    const n = await conn.read(chunk);
    if (n === null) throw new Error(`CONNECT ${address}: closed before the response head`);
    const next = new Uint8Array(buf.length + n);
    next.set(buf);
    next.set(chunk.subarray(0, n), buf.length);
    buf = next;
    const end = headEnd(buf);
    if (end < 0) continue;
    const status = new TextDecoder().decode(buf.subarray(0, end)).split("\r\n")[0] ?? "";
    if (!/^HTTP\/1\.1 200 /.test(status)) throw new Error(`CONNECT ${address}: ${status}`);
    return buf.subarray(end);
  }
}

/** A {@linkcode Duplex} over a plain socket; `rest` holds bytes already read past a head. */
export function connDuplex(conn: Deno.Conn, rest: Uint8Array = new Uint8Array(0)): Duplex {
  let closed = false;
  const closedP = Promise.withResolvers<void>();
  const buf = new Uint8Array(64 * 1024);
  return {
    async read() {
      if (rest.length > 0) {
        const out = rest;
        rest = new Uint8Array(0);
        return out;
      }
      const n = await conn.read(buf);
      return n === null ? null : buf.slice(0, n);
    },
    async write(bytes) {
      for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
    },
    close() {
      if (closed) return;
      closed = true;
      try {
        conn.close();
      } catch { /* closed */ }
      closedP.resolve();
    },
    closed: closedP.promise,
    closeError: () => "",
  };
}

/** Dials `address` through the HTTP-CONNECT frontend at `udsPath`. */
export async function dialConnect(
  udsPath: string,
  address: string,
  signal: AbortSignal,
): Promise<Duplex> {
  const conn = await Deno.connect({ transport: "unix", path: udsPath });
  const onAbort = () => {
    try {
      conn.close();
    } catch { /* closed */ }
  };
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    await conn.write(new TextEncoder().encode(`CONNECT ${address} HTTP/1.1\r\nHost: x\r\n\r\n`));
    return connDuplex(conn, await readHead(conn, address));
  } catch (err) {
    onAbort();
    throw signal.aborted ? new Error("dial cancelled", { cause: err }) : err;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}
