/**
 * A small HTTP CONNECT proxy on loopback for the egress tests: it answers `CONNECT host:port` with
 * `200` and pipes bytes both ways, counts the tunnels it served (and records their targets and
 * `Proxy-Authorization` headers), and can be told to refuse (403, 407, …) or to demand
 * credentials.
 *
 * @module
 */

/** A running test proxy. */
export interface ConnectProxy extends AsyncDisposable {
  /** The bound port on 127.0.0.1. */
  readonly port: number;
  /** `http://127.0.0.1:<port>`. */
  readonly url: string;
  /** Number of CONNECTs answered `200`. */
  readonly served: number;
  /** Every CONNECT target asked for (refused ones too), in order. */
  readonly targets: readonly string[];
  /** The `Proxy-Authorization` header of every CONNECT ("" when absent), in order. */
  readonly authorizations: readonly string[];
  /** Refuse every CONNECT with this status and reason; undefined serves them. */
  refuse: { status: number; reason: string } | undefined;
  /** When set, a CONNECT without exactly this `Proxy-Authorization` gets `407`. */
  requireAuthorization: string | undefined;
  /** Resolves once the proxy has seen `n` CONNECT requests in all. */
  requests(n: number): Promise<void>;
}

const HEAD_END = "\r\n\r\n";

async function readHead(conn: Deno.Conn): Promise<{ head: string; rest: Uint8Array } | undefined> {
  const buf = new Uint8Array(16 * 1024);
  let len = 0;
  const latin1 = new TextDecoder("latin1");
  while (len < buf.length) {
    const n = await conn.read(buf.subarray(len));
    if (n === null) return undefined;
    len += n;
    const text = latin1.decode(buf.subarray(0, len));
    const end = text.indexOf(HEAD_END);
    if (end >= 0) return { head: text.slice(0, end), rest: buf.slice(end + 4, len) };
  }
  return undefined;
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.length;) off += await conn.write(data.subarray(off));
}

function answer(conn: Deno.Conn, status: number, reason: string, extra = ""): Promise<void> {
  const text = `HTTP/1.1 ${status} ${reason}\r\n${extra}Content-Length: 0\r\n\r\n`;
  return writeAll(conn, new TextEncoder().encode(text));
}

/** Copies `from` to `to` until end of stream, then half-closes (or closes) `to`. */
async function pipe(from: Deno.Conn, to: Deno.TcpConn): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  try {
    for (;;) {
      const n = await from.read(buf);
      if (n === null) break;
      await writeAll(to, buf.subarray(0, n));
    }
    await to.closeWrite();
  } catch {
    for (const c of [from, to]) {
      try {
        c.close();
      } catch { /* closed */ }
    }
  }
}

function splitTarget(target: string): { hostname: string; port: number } {
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(target);
  if (!m) throw new Error(`bad target ${target}`);
  return { hostname: m[1]!, port: Number(m[2]) };
}

/** Starts the proxy on 127.0.0.1 (a free port). */
export function startConnectProxy(): ConnectProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const conns = new Set<Deno.Conn>();
  const waiters: { n: number; resolve: () => void }[] = [];
  const state: ConnectProxy = {
    port,
    url: `http://127.0.0.1:${port}`,
    served: 0,
    targets: [],
    authorizations: [],
    refuse: undefined,
    requireAuthorization: undefined,
    requests: (n) =>
      state.targets.length >= n ? Promise.resolve() : new Promise<void>((resolve) => {
        waiters.push({ n, resolve });
      }),
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await loop;
    },
  };
  const targets = state.targets as string[];
  const authorizations = state.authorizations as string[];

  async function serve(conn: Deno.TcpConn): Promise<void> {
    conns.add(conn);
    try {
      conn.setNoDelay(true);
      const request = await readHead(conn);
      if (request === undefined) return conn.close();
      const [line = "", ...headers] = request.head.split("\r\n");
      const [method, target = ""] = line.split(" ");
      const auth = headers.find((h) => /^proxy-authorization:/i.test(h))?.replace(/^[^:]*:\s*/, "");
      if (method !== "CONNECT") return void await answer(conn, 405, "Method Not Allowed");
      targets.push(target);
      authorizations.push(auth ?? "");
      for (const w of waiters.filter((w) => targets.length >= w.n)) w.resolve();
      if (state.refuse) return void await answer(conn, state.refuse.status, state.refuse.reason);
      if (state.requireAuthorization !== undefined && auth !== state.requireAuthorization) {
        const challenge = 'Proxy-Authenticate: Basic realm="test"\r\n';
        return void await answer(conn, 407, "Proxy Authentication Required", challenge);
      }
      let upstream: Deno.TcpConn;
      try {
        upstream = await Deno.connect(splitTarget(target));
      } catch {
        return void await answer(conn, 502, "Bad Gateway");
      }
      conns.add(upstream);
      upstream.setNoDelay(true);
      (state as { served: number }).served++;
      await writeAll(conn, new TextEncoder().encode("HTTP/1.1 200 Connection established\r\n\r\n"));
      if (request.rest.length > 0) await writeAll(upstream, request.rest);
      await Promise.all([pipe(conn, upstream), pipe(upstream, conn)]);
      upstream.close();
      conns.delete(upstream);
    } catch {
      /* the peer went away */
    } finally {
      try {
        conn.close();
      } catch { /* closed */ }
      conns.delete(conn);
    }
  }

  const loop = (async () => {
    const running: Promise<void>[] = [];
    try {
      for await (const conn of listener) running.push(serve(conn));
    } catch { /* closed */ }
    await Promise.allSettled(running);
  })();
  return state;
}
