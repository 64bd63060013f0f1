/**
 * Test helpers for the HTTP-CONNECT frontend: a raw CONNECT client over the UDS (plaintext) or
 * TCP with mTLS, a loopback "blackhole" whose connects hang, and small TCP backends that record
 * what happened to their connections (closes seen, server-speaks-first banner).
 *
 * Everything stays on loopback.
 *
 * @module
 */

import type { ServerProcess } from "./framework.ts";
import type { ByteConn } from "./http_client.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A parsed HTTP response head. */
export interface ResponseHead {
  status: number;
  statusLine: string;
  /** Lower-cased names. */
  headers: Record<string, string>;
  /** The exact bytes of the head, `\r\n\r\n` included. */
  raw: string;
}

/** Finds `\r\n\r\n`; returns the index just past it, or -1. */
function headEnd(buf: Uint8Array): number {
  for (let i = 3; i < buf.length; i++) {
    if (buf[i] === 10 && buf[i - 1] === 13 && buf[i - 2] === 10 && buf[i - 3] === 13) return i + 1;
  }
  return -1;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/**
 * A raw connection to the proxy with its own read buffer. A read that a timeout gave up on is
 * kept and its bytes are delivered later, so "nothing arrived within N ms" loses nothing.
 */
export class RawConn implements AsyncDisposable {
  readonly conn: Deno.Conn;
  #buf: Uint8Array = new Uint8Array(0);
  #pending: Promise<Uint8Array | null> | undefined;
  #eof = false;
  #closed = false;

  constructor(conn: Deno.Conn) {
    this.conn = conn;
  }

  /** Bytes received and not consumed yet. */
  get buffered(): number {
    return this.#buf.length;
  }

  /** True once the peer closed (EOF or reset seen). */
  get eof(): boolean {
    return this.#eof;
  }

  #read(): Promise<Uint8Array | null> {
    this.#pending ??= (async () => {
      const chunk = new Uint8Array(64 * 1024);
      try {
        const n = await this.conn.read(chunk);
        return n === null ? null : chunk.subarray(0, n);
      } catch {
        return null; // reset or closed: treated as the end
      }
    })();
    return this.#pending;
  }

  /** Waits for one more chunk; false at EOF. */
  async #fill(timeoutMs?: number): Promise<boolean | "timeout"> {
    if (this.#eof) return false;
    const reading = this.#read();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const result = await (timeoutMs === undefined ? reading : Promise.race([
      reading,
      new Promise<"timeout">((
        resolve,
      ) => (timer = setTimeout(() => resolve("timeout"), timeoutMs))),
    ]));
    clearTimeout(timer);
    if (result === "timeout") return "timeout";
    this.#pending = undefined;
    if (result === null) {
      this.#eof = true;
      return false;
    }
    this.#buf = concat(this.#buf, result);
    return true;
  }

  /** Writes all of `data` (string or bytes). */
  async write(data: Uint8Array | string): Promise<void> {
    let bytes = typeof data === "string" ? encoder.encode(data) : data;
    while (bytes.length > 0) bytes = bytes.subarray(await this.conn.write(bytes));
  }

  /**
   * Reads a response head (`\r\n\r\n`). Bytes that arrived with it stay buffered (see
   * {@linkcode buffered}), as in kube-apiserver's check for buffered data after the 200.
   */
  async readHead(timeoutMs = 20_000): Promise<ResponseHead> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const end = headEnd(this.#buf);
      if (end >= 0) {
        const raw = decoder.decode(this.#buf.subarray(0, end));
        this.#buf = this.#buf.slice(end);
        const lines = raw.slice(0, -4).split("\r\n");
        const headers: Record<string, string> = {};
        for (const line of lines.slice(1)) {
          const i = line.indexOf(":");
          if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
        }
        const statusLine = lines[0] ?? "";
        return { status: Number(statusLine.split(" ")[1]), statusLine, headers, raw };
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no response head within ${timeoutMs} ms`);
      const got = await this.#fill(left);
      if (got === false) {
        throw new Error(`connection ended before a response head (${this.#buf.length} bytes)`);
      }
    }
  }

  /** Reads exactly `n` bytes. */
  async readExactly(n: number, timeoutMs = 20_000): Promise<Uint8Array> {
    const deadline = Date.now() + timeoutMs;
    while (this.#buf.length < n) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`only ${this.#buf.length} of ${n} bytes in ${timeoutMs} ms`);
      const got = await this.#fill(left);
      if (got === false) throw new Error(`stream ended after ${this.#buf.length} of ${n} bytes`);
    }
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.slice(n);
    return out;
  }

  /** Reads up to `n` bytes: what is buffered, else one chunk (partial read). Empty at EOF. */
  async readSome(n: number, timeoutMs = 20_000): Promise<Uint8Array> {
    if (this.#buf.length === 0) {
      const got = await this.#fill(timeoutMs);
      if (got === "timeout") throw new Error(`no bytes within ${timeoutMs} ms`);
    }
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.slice(out.length);
    return out;
  }

  /** Reads until EOF (bounded by `timeoutMs`). */
  async readToEnd(timeoutMs = 20_000): Promise<Uint8Array> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no EOF within ${timeoutMs} ms`);
      const got = await this.#fill(left);
      if (got === false) break;
    }
    const out = this.#buf;
    this.#buf = new Uint8Array(0);
    return out;
  }

  /** Resolves true at EOF within `ms`, false otherwise (bytes that come are kept). */
  async waitForEof(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.#eof) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      if ((await this.#fill(left)) === "timeout") return false;
    }
    return true;
  }

  /** Web-stream sides (buffered bytes first), for `httpRequest`. */
  asByteConn(): ByteConn {
    return {
      readable: new ReadableStream<Uint8Array>({
        pull: async (controller) => {
          if (this.#buf.length === 0 && (await this.#fill()) === false) {
            controller.close();
            return;
          }
          controller.enqueue(this.#buf);
          this.#buf = new Uint8Array(0);
        },
      }),
      writable: new WritableStream<Uint8Array>({ write: (chunk) => this.write(chunk) }),
    };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

/** How to reach an HTTP-CONNECT frontend. */
export type ProxyEndpoint =
  | { kind: "uds"; path: string }
  | { kind: "tls"; port: number; ca: string; cert?: string; key?: string };

/** The frontend of a server process started with `frontend: "uds"` or `"tcp"`. */
export async function endpointOf(server: ServerProcess): Promise<ProxyEndpoint> {
  if (server.serverPort === 0) return { kind: "uds", path: server.udsPath };
  return {
    kind: "tls",
    port: server.serverPort,
    ca: await Deno.readTextFile(server.pki.caCert),
    cert: await Deno.readTextFile(server.pki.clientCert),
    key: await Deno.readTextFile(server.pki.clientKey),
  };
}

/** Opens a raw connection to the frontend (TLS handshake done for TCP). */
export async function openProxy(endpoint: ProxyEndpoint): Promise<RawConn> {
  if (endpoint.kind === "uds") {
    return new RawConn(await Deno.connect({ transport: "unix", path: endpoint.path }));
  }
  const conn = endpoint.cert && endpoint.key
    ? await Deno.connectTls({
      hostname: "127.0.0.1",
      port: endpoint.port,
      caCerts: [endpoint.ca],
      cert: endpoint.cert,
      key: endpoint.key,
    })
    : await Deno.connectTls({ hostname: "127.0.0.1", port: endpoint.port, caCerts: [endpoint.ca] });
  await conn.handshake();
  return new RawConn(conn);
}

/** The request head kube-apiserver sends. */
export function connectHead(target: string, host = "127.0.0.1"): string {
  return `CONNECT ${target} HTTP/1.1\r\nHost: ${host}\r\n\r\n`;
}

/** A CONNECT answered: the connection, the response head and, for a failure, the whole body. */
export interface ConnectResult {
  conn: RawConn;
  head: ResponseHead;
  /** Body read to EOF when the status is not 200. */
  body: string;
}

/** Opens a connection, sends CONNECT for `target`, reads the answer (and a failure's body). */
export async function connect(
  endpoint: ProxyEndpoint,
  target: string,
  options: { timeoutMs?: number; head?: string } = {},
): Promise<ConnectResult> {
  const conn = await openProxy(endpoint);
  try {
    await conn.write(options.head ?? connectHead(target));
    const head = await conn.readHead(options.timeoutMs);
    let body = "";
    if (head.status !== 200) {
      body = decoder.decode(await conn.readToEnd(options.timeoutMs));
      conn.close();
    }
    return { conn, head, body };
  } catch (err) {
    conn.close();
    throw err;
  }
}

/** CONNECT that must succeed with exactly `HTTP/1.1 200 Connection Established\r\n\r\n`. */
export async function tunnel(endpoint: ProxyEndpoint, target: string): Promise<RawConn> {
  const { conn, head, body } = await connect(endpoint, target);
  if (head.raw !== "HTTP/1.1 200 Connection Established\r\n\r\n") {
    conn.close();
    throw new Error(`CONNECT ${target} answered ${JSON.stringify(head.raw + body)}`);
  }
  return conn;
}

// ------------------------------------------------------------------ backends

/** A loopback address whose connects hang. */
export interface Blackhole extends AsyncDisposable {
  address: string;
  /** Kills the listener and waits for it to exit. */
  stop(): Promise<void>;
}

/**
 * A loopback address whose connects hang: a listener on a port of its own choosing (0) with a full
 * accept backlog (python3). It reports its port once one held connect completed, which is when
 * the backlog of `listen(0)` (one connection) is full and further SYNs go unanswered.
 */
export async function startBlackhole(): Promise<Blackhole> {
  const child = new Deno.Command("python3", {
    args: [
      "-c",
      `import select,signal,socket,sys
s=socket.socket();s.bind(("127.0.0.1",0));s.listen(0)
port=s.getsockname()[1]
held=[]
for i in range(8):
  c=socket.socket();c.setblocking(False)
  try: c.connect(("127.0.0.1",port))
  except BlockingIOError: pass
  held.append(c)
select.select([],held,[])
print(port,flush=True)
signal.pause()`,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let line = "";
  while (!line.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    line += value;
  }
  const stop = async () => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await reader.cancel().catch(() => {});
    await child.status;
  };
  const port = Number.parseInt(line, 10);
  if (!(port > 0)) {
    await stop();
    throw new Error(`blackhole did not start (${JSON.stringify(line)})`);
  }
  return { address: `127.0.0.1:${port}`, stop, [Symbol.asyncDispose]: stop };
}

/** True when python3 runs (needed by the blackhole). */
export const havePython: boolean = await new Deno.Command("python3", { args: ["-c", "pass"] })
  .output().then((o) => o.success, () => false);

/** True when curl runs. */
export const haveCurl: boolean = await new Deno.Command("curl", { args: ["--version"] })
  .output().then((o) => o.success, () => false);

/** Runs a command, returning its exit code and output (for curl). */
export async function run(
  cmd: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(cmd, { args, stdin: "null", stdout: "piped", stderr: "piped" })
    .output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}
