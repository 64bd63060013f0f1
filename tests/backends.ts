/**
 * Real backends for tests, on loopback: an HTTP server and a raw TCP echo server.
 *
 * HTTP routes:
 * - `/success` → `hello`
 * - `/download?chunks=N&size=S` → N chunks of S bytes of {@linkcode pattern}
 * - `/echo` (POST) → the request body
 * - `/upload` (POST) → `<length> <checksum>` of the body
 *
 * @module
 */

/** Deterministic bytes: byte i of the stream is `(i * 7 + (i >> 11)) & 255`. */
export function pattern(offset: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let j = 0; j < length; j++) {
    const i = offset + j;
    out[j] = (i * 7 + (i >>> 11)) & 255;
  }
  return out;
}

/** Checks that `bytes` equal {@linkcode pattern} from offset 0; returns the first bad index or -1. */
export function firstMismatch(bytes: Uint8Array): number {
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] !== ((i * 7 + (i >>> 11)) & 255)) return i;
  }
  return -1;
}

/** Adler-32-like checksum, enough to catch corruption and reordering. */
export function checksum(bytes: Uint8Array, state = { a: 1, b: 0 }): { a: number; b: number } {
  let { a, b } = state;
  for (let i = 0; i < bytes.length; i++) {
    a = (a + bytes[i]!) % 65521;
    b = (b + a) % 65521;
  }
  return { a, b };
}

/** A running HTTP backend. */
export interface HttpBackend extends AsyncDisposable {
  port: number;
  address: string;
}

/** Starts the HTTP backend on 127.0.0.1. */
export function startHttpBackend(): HttpBackend {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    switch (url.pathname) {
      case "/success":
        return new Response("hello");
      case "/download": {
        const chunks = Number(url.searchParams.get("chunks") ?? 10);
        const size = Number(url.searchParams.get("size") ?? 1 << 20);
        let sent = 0;
        const body = new ReadableStream<Uint8Array>({
          pull(controller) {
            if (sent >= chunks) return controller.close();
            controller.enqueue(pattern(sent * size, size));
            sent++;
          },
        });
        return new Response(body, { headers: { "content-length": String(chunks * size) } });
      }
      case "/echo":
        return new Response(req.body);
      case "/upload": {
        let length = 0;
        let sum = { a: 1, b: 0 };
        for await (const chunk of req.body ?? []) {
          length += chunk.length;
          sum = checksum(chunk, sum);
        }
        return new Response(`${length} ${sum.a}:${sum.b}`);
      }
      default:
        return new Response("not found", { status: 404 });
    }
  });
  const port = server.addr.port;
  return {
    port,
    address: `127.0.0.1:${port}`,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

/** A raw TCP echo backend that records opens and closes, and can close its connections itself. */
export interface EchoBackend extends AsyncDisposable {
  port: number;
  address: string;
  readonly accepted: number;
  /** Connections whose peer closed (EOF or error seen by the backend). */
  readonly peerClosed: number;
  /** Connections currently open. */
  readonly open: number;
  /** Resolves once `peerClosed` reaches `n` (at once if it already has). */
  peerClosedReaches(n: number): Promise<void>;
  /** Closes every open connection from the backend side. */
  closeAll(): void;
}

/** Echoes `conn` until EOF or error; true when the peer ended it (not a close of ours). */
async function echoLoop(conn: Deno.Conn, banner: string | undefined, ours: () => boolean) {
  const buf = new Uint8Array(64 * 1024);
  try {
    if (banner) await conn.write(new TextEncoder().encode(banner));
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      let chunk = buf.subarray(0, n);
      while (chunk.length > 0) chunk = chunk.subarray(await conn.write(chunk));
    }
  } catch {
    if (ours()) return false;
  }
  return !ours();
}

/**
 * Starts a TCP echo backend on 127.0.0.1 (read/write loops, partial writes handled): it writes
 * `banner` (if any) on accept, then echoes.
 */
export function startEchoBackend(banner?: string): EchoBackend {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const loops = new Set<Promise<void>>();
  const waiters: { n: number; resolve: () => void }[] = [];
  let accepted = 0;
  let peerClosed = 0;
  const serve = async (conn: Deno.Conn) => {
    if (await echoLoop(conn, banner, () => !conns.has(conn))) {
      peerClosed++;
      for (const w of waiters.filter((w) => w.n <= peerClosed)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }
    conns.delete(conn);
    try {
      conn.close();
    } catch { /* closed */ }
  };
  const accepting = (async () => {
    for await (const conn of listener) {
      accepted++;
      conns.add(conn);
      const loop = serve(conn);
      loops.add(loop);
      loop.finally(() => loops.delete(loop));
    }
  })().catch(() => {});
  const port = (listener.addr as Deno.NetAddr).port;
  return {
    port,
    address: `127.0.0.1:${port}`,
    get accepted() {
      return accepted;
    },
    get peerClosed() {
      return peerClosed;
    },
    get open() {
      return conns.size;
    },
    peerClosedReaches(n) {
      if (peerClosed >= n) return Promise.resolve();
      const { promise, resolve } = Promise.withResolvers<void>();
      waiters.push({ n, resolve });
      return promise;
    },
    closeAll() {
      for (const c of [...conns]) {
        conns.delete(c);
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
    async [Symbol.asyncDispose]() {
      listener.close();
      this.closeAll();
      await accepting;
      await Promise.all([...loops]);
    },
  };
}

/** Reads exactly `n` bytes from a reader (partial reads joined). */
export async function readExactly(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  n: number,
  pending: { rest: Uint8Array },
): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let have = 0;
  while (have < n) {
    if (pending.rest.length === 0) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`stream ended after ${have} of ${n} bytes`);
      pending.rest = value;
    }
    const take = Math.min(n - have, pending.rest.length);
    out.set(pending.rest.subarray(0, take), have);
    pending.rest = pending.rest.subarray(take);
    have += take;
  }
  return out;
}
