/**
 * `serveBoundedHttp`: the plain HTTP servers of the health and admin ports, with a bound on idle
 * connections. `Deno.serve` has no idle, header or handshake timeout, so a client that connects
 * and sends nothing (or trickles a request, or keeps an idle keep-alive connection) would hold
 * its connection forever. Here the public port is a `Deno.listen` loop that splices each
 * connection to a `Deno.serve` on a loopback port and closes it once the server has sent nothing
 * for `idleTimeoutMs` since the connection opened or since its last response bytes: a request
 * that never completes gets no response, so it is closed too.
 *
 * A bind failure is a `CONFIG` error naming the flag and the address.
 *
 * @module
 */

import { errorMessage, KnpError } from "@knp/core/errors";

/** Default bound on a connection that gets no response bytes. */
export const HTTP_IDLE_TIMEOUT_MS = 10_000;

/** Options of {@linkcode serveBoundedHttp}. */
export interface BoundedHttpOptions {
  /** The flag that set the port, for the bind error (e.g. "--health-port"). */
  flag: string;
  hostname: string;
  /** 0 picks a free port. */
  port: number;
  handler: (req: Request) => Response | Promise<Response>;
  /** Closes a connection the server has sent nothing on for this long. @default 10000 */
  idleTimeoutMs?: number;
}

/** A running bounded HTTP server. */
export interface BoundedHttpServer {
  /** The bound public port. */
  readonly port: number;
  /** Open public connections. */
  readonly connections: number;
  /** Stops accepting, closes every connection and the loopback server. */
  close(): Promise<void>;
}

/** "host:port", with IPv6 hosts in brackets. */
function address(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Binds `hostname:port` or throws a `CONFIG` error naming `flag` and the address. */
function listenOrThrow(flag: string, hostname: string, port: number): Deno.TcpListener {
  try {
    return Deno.listen({ hostname, port });
  } catch (err) {
    if (err instanceof Deno.errors.NotCapable) throw err;
    throw new KnpError(
      "CONFIG",
      `${flag}: cannot listen on ${address(hostname, port)}: ${errorMessage(err)}`,
      { cause: err },
    );
  }
}

/** Starts the server. @throws {KnpError} `CONFIG` when the port cannot be bound */
export function serveBoundedHttp(options: BoundedHttpOptions): BoundedHttpServer {
  const listener = listenOrThrow(options.flag, options.hostname, options.port);
  const inner = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, options.handler);
  const idleMs = options.idleTimeoutMs ?? HTTP_IDLE_TIMEOUT_MS;
  const open = new Set<() => void>();
  const accepting = (async () => {
    for await (const conn of listener) {
      const close = spliceBounded(conn, inner.addr.port, idleMs, () => open.delete(close));
      open.add(close);
    }
  })().catch(() => {/* listener closed */});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    get connections() {
      return open.size;
    },
    async close() {
      try {
        listener.close();
      } catch { /* closed */ }
      await accepting;
      for (const close of [...open]) close();
      await inner.shutdown();
    },
  };
}

/** Copies `from` into `to` until EOF, calling `onData` after every chunk. */
async function pump(from: Deno.Conn, to: Deno.Conn, onData: () => void): Promise<void> {
  const buffer = new Uint8Array(16 * 1024);
  for (;;) {
    const n = await from.read(buffer);
    if (n === null) break;
    for (let off = 0; off < n;) off += await to.write(buffer.subarray(off, n));
    onData();
  }
  await to.closeWrite();
}

/**
 * Splices `conn` to the loopback server; closes both once the server sent nothing for `idleMs`.
 * Returns the function that closes them.
 */
function spliceBounded(
  conn: Deno.Conn,
  innerPort: number,
  idleMs: number,
  onClosed: () => void,
): () => void {
  let closed = false;
  let lastSent = Date.now();
  let upstream: Deno.Conn | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const close = () => {
    if (closed) return;
    closed = true;
    clearTimeout(timer);
    for (const c of [conn, upstream]) {
      try {
        c?.close();
      } catch { /* closed */ }
    }
    onClosed();
  };
  const check = () => {
    const left = lastSent + idleMs - Date.now();
    if (left <= 0) close();
    else timer = setTimeout(check, left);
  };
  timer = setTimeout(check, idleMs);
  Deno.connect({ hostname: "127.0.0.1", port: innerPort }).then((inner) => {
    if (closed) {
      inner.close();
      return;
    }
    upstream = inner;
    Promise.all([
      pump(conn, inner, () => {}),
      pump(inner, conn, () => lastSent = Date.now()),
    ]).then(close, close);
  }, close);
  return close;
}
