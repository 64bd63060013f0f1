/**
 * The benchmark backends, run as their own process (`deno run --allow-net=127.0.0.1 bench/backend.ts`): raw TCP
 * source, sink, echo, banner and hold servers on 127.0.0.1 with `read`/`write` loops (the fastest way
 * Deno moves bytes). See `wire.ts` for their protocol.
 *
 * Prints `{"source":…,"sink":…,"echo":…,"banner":…,"hold":…}` (the ports) as one line on stdout, then serves
 * until its stdin ends, so it never outlives the bench.
 *
 * @module
 */

import { ACK, type BackendPorts, BANNER, CHUNK, decodeLength, HEADER_BYTES } from "./wire.ts";

/** Deterministic payload the source sends. */
const PAYLOAD = new Uint8Array(CHUNK).map((_, i) => (i * 7 + (i >>> 11)) & 255);

function listen(serve: (conn: Deno.TcpConn) => Promise<void>): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  (async () => {
    for await (const conn of listener) {
      conn.setNoDelay(true);
      serve(conn)
        .catch(() => {}) // a reset peer is normal here (stalled readers, closed clients)
        .finally(() => {
          try {
            conn.close();
          } catch { /* already closed */ }
        });
    }
  })().catch(() => {});
  return listener.addr.port;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  while (bytes.byteLength > 0) bytes = bytes.subarray(await conn.write(bytes));
}

/** Reads exactly one request header; null at a clean end between requests. */
async function readHeader(conn: Deno.Conn, buf: Uint8Array): Promise<number | null> {
  let have = 0;
  while (have < HEADER_BYTES) {
    const n = await conn.read(buf.subarray(have, HEADER_BYTES));
    if (n === null) {
      if (have === 0) return null;
      throw new Error("connection ended inside a request header");
    }
    have += n;
  }
  return decodeLength(buf);
}

async function source(conn: Deno.Conn): Promise<void> {
  const header = new Uint8Array(HEADER_BYTES);
  while (true) {
    const n = await readHeader(conn, header);
    if (n === null) return;
    // The payload repeated from its start, also across partial writes (the ha-load case
    // hashes every byte).
    let left = n;
    let at = 0;
    while (left > 0) {
      const written = await conn.write(PAYLOAD.subarray(at, Math.min(CHUNK, at + left)));
      left -= written;
      at = (at + written) % CHUNK;
    }
  }
}

async function sink(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(CHUNK);
  const ack = new Uint8Array([ACK]);
  let headerHave = 0;
  const header = new Uint8Array(HEADER_BYTES);
  let left = -1; // -1: reading a header
  while (true) {
    const n = await conn.read(buf);
    if (n === null) return;
    let off = 0;
    while (off < n) {
      if (left < 0) {
        const take = Math.min(HEADER_BYTES - headerHave, n - off);
        header.set(buf.subarray(off, off + take), headerHave);
        headerHave += take;
        off += take;
        if (headerHave < HEADER_BYTES) break;
        headerHave = 0;
        left = decodeLength(header);
      }
      const take = Math.min(left, n - off);
      left -= take;
      off += take;
      if (left === 0) {
        left = -1;
        await writeAll(conn, ack);
      }
    }
  }
}

async function echo(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  while (true) {
    const n = await conn.read(buf);
    if (n === null) return;
    await writeAll(conn, buf.subarray(0, n));
  }
}

/** Holds a connection with the smallest pending read that still sees its end. */
async function hold(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(64);
  while ((await conn.read(buf)) !== null) { /* discard */ }
}

async function banner(conn: Deno.Conn): Promise<void> {
  await writeAll(conn, new Uint8Array([BANNER]));
  await echo(conn);
}

/** Starts the four backends in this process. */
export function startBackends(): BackendPorts {
  return {
    source: listen(source),
    sink: listen(sink),
    echo: listen(echo),
    banner: listen(banner),
    hold: listen(hold),
  };
}

if (import.meta.main) {
  const ports = startBackends();
  await Deno.stdout.write(new TextEncoder().encode(JSON.stringify(ports) + "\n"));
  // Serve until the parent closes our stdin (or dies).
  for await (const _ of Deno.stdin.readable) { /* ignore input */ }
  Deno.exit(0);
}
