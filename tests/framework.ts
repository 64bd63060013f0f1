/**
 * Test framework: real server and agent processes (`deno run server/main.ts`, `agent/main.ts`)
 * with upstream-style flags, throwaway certificates, and real backends on loopback.
 *
 * Every handle is `AsyncDisposable`, so `await using` tears it down even when a test fails.
 *
 * Processes bind port 0 and the framework learns the ports from their start-up log record
 * ("proxy server started", "agent link": `listening`), so no port is found free and released
 * first. Tests synchronise on the processes' JSON log records (a promise the stderr reader
 * resolves: {@linkcode ManagedProcess.waitForLog}), never on sleeps or timers.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { generateTestPki, writeTestPki } from "../testing/certs.ts";
import { serverRunFlags } from "../server/permissions.ts";
import { agentPermissionFlags } from "../agent/permissions.ts";
import { AGENT_FLAGS } from "../agent/agent_flags.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** PEM files of a throwaway PKI. */
export interface PkiFiles {
  caCert: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

let pkiPromise: Promise<{ dir: string; files: PkiFiles }> | undefined;

/** One PKI shared by the tests of a process (generated once). */
export function testPki(): Promise<{ dir: string; files: PkiFiles }> {
  pkiPromise ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "knp-pki-" });
    // One PKI per process: remove it when the process ends.
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch { /* already gone */ }
    });
    const files = await writeTestPki(dir, await generateTestPki());
    return { dir, files };
  })();
  return pkiPromise;
}

/**
 * A loopback port nothing listens on, for dials that must be refused. Port 1 (tcpmux) is
 * privileged and unused, so unlike a port found free and released (which another process may take
 * before the dial), it stays closed for the whole test.
 */
export const CLOSED_PORT = 1;

/** GETs `url` and returns its status; the body is dropped (no leaked resource). */
export async function httpStatus(url: string): Promise<number> {
  const res = await fetch(url);
  await res.body?.cancel();
  return res.status;
}

/** One JSON log record a child process wrote to stderr (`msg` is its message). */
export interface LogRecord {
  msg?: string;
  level?: string;
  [field: string]: unknown;
}

/** Options of {@linkcode ManagedProcess.waitForLog}. */
export interface WaitForLogOptions {
  /** Only records at or after this index count (see {@linkcode ManagedProcess.mark}). @default 0 */
  from?: number;
  /** Failure deadline (not a synchronisation point). @default 30_000 */
  timeoutMs?: number;
}

interface LogWaiter {
  test: (records: readonly LogRecord[]) => LogRecord | undefined;
  resolve: (record: LogRecord) => void;
  reject: (err: Error) => void;
}

/** A child process with its log captured; stderr's JSON lines are parsed as they arrive. */
export class ManagedProcess implements AsyncDisposable {
  readonly name: string;
  readonly child: Deno.ChildProcess;
  #log: string[] = [];
  #records: LogRecord[] = [];
  #partial = "";
  #waiters = new Set<LogWaiter>();
  #exited = false;
  #status: Promise<Deno.CommandStatus>;
  #drained: Promise<unknown>;

  constructor(name: string, args: string[], env: Record<string, string> = {}) {
    this.name = name;
    this.child = new Deno.Command(Deno.execPath(), {
      args,
      cwd: ROOT,
      env: { NO_COLOR: "1", ...env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#drained = Promise.all([
      this.#drain(this.child.stdout, false),
      this.#drain(this.child.stderr, true),
    ]);
    this.#status = this.child.status.then(async (status) => {
      await this.#drained;
      this.#exited = true;
      for (const waiter of this.#waiters) {
        waiter.reject(new Error(`${this.name} exited with ${status.code} first`));
      }
      this.#waiters.clear();
      return status;
    });
  }

  async #drain(stream: ReadableStream<Uint8Array>, parse: boolean): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      const text = decoder.decode(chunk, { stream: true });
      this.#log.push(text);
      if (parse) this.#parse(text);
    }
  }

  #parse(text: string): void {
    const lines = (this.#partial + text).split("\n");
    this.#partial = lines.pop() ?? "";
    let added = false;
    for (const line of lines) {
      if (!line.startsWith("{")) continue;
      try {
        this.#records.push(JSON.parse(line) as LogRecord);
        added = true;
      } catch { /* not a log record */ }
    }
    if (!added) return;
    for (const waiter of this.#waiters) {
      const record = waiter.test(this.#records);
      if (record === undefined) continue;
      this.#waiters.delete(waiter);
      waiter.resolve(record);
    }
  }

  /** Everything the process wrote so far. */
  get log(): string {
    return this.#log.join("");
  }

  /** The JSON log records parsed so far. */
  get records(): readonly LogRecord[] {
    return this.#records;
  }

  /** The index the next record will get: pass it as `from` to wait for a later record. */
  mark(): number {
    return this.#records.length;
  }

  /**
   * Resolves with the first record from `options.from` on that `match` accepts (a string matches
   * `msg`); rejects when the process exits first. Resolved by the stderr reader: no polling.
   */
  waitForLog(
    match: string | ((record: LogRecord) => boolean),
    options: WaitForLogOptions = {},
  ): Promise<LogRecord> {
    const accept = typeof match === "string" ? (r: LogRecord) => r.msg === match : match;
    const from = options.from ?? 0;
    const what = typeof match === "string" ? `"${match}"` : "a matching record";
    return this.waitForState((records) => records.slice(from).find(accept), what, options);
  }

  /**
   * Resolves with `test`'s result once it returns a record for the records so far, re-evaluated on
   * every new record; rejects when the process exits first or after `timeoutMs`.
   */
  waitForState(
    test: (records: readonly LogRecord[]) => LogRecord | undefined,
    what: string,
    options: { timeoutMs?: number } = {},
  ): Promise<LogRecord> {
    const now = test(this.#records);
    if (now !== undefined) return Promise.resolve(now);
    if (this.#exited) return Promise.reject(new Error(`${this.name} exited before ${what}`));
    const { promise, resolve, reject } = Promise.withResolvers<LogRecord>();
    const waiter: LogWaiter = { test, resolve, reject };
    this.#waiters.add(waiter);
    const timer = setTimeout(() => {
      this.#waiters.delete(waiter);
      reject(new Error(`${this.name}: no ${what} within ${options.timeoutMs ?? 30_000} ms`));
    }, options.timeoutMs ?? 30_000);
    return promise.finally(() => clearTimeout(timer));
  }

  get status(): Promise<Deno.CommandStatus> {
    return this.#status;
  }

  /** Sends a signal (ignored when the process already exited). */
  kill(signal: Deno.Signal = "SIGTERM"): void {
    try {
      this.child.kill(signal);
    } catch { /* already gone */ }
  }

  async stop(): Promise<Deno.CommandStatus> {
    this.kill("SIGKILL");
    return await this.#status;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** Ports a process reported in the `listening` field of its start-up log record. */
function listening(record: LogRecord): Record<string, number> {
  const ports = record["listening"] as Record<string, number> | undefined;
  if (ports === undefined) throw new Error(`no "listening" in ${JSON.stringify(record)}`);
  return ports;
}

/**
 * Connected-minus-lost count over `records`: the agents a server holds (`up`/`down` its
 * "agent connected"/"agent disconnected"), or the servers an agent holds.
 */
function balance(records: readonly LogRecord[], up: string, down: string): number {
  let n = 0;
  for (const r of records) {
    if (r.msg === up) n++;
    else if (r.msg === down) n--;
  }
  return n;
}

/** Waits until the connected-minus-lost balance of `process`'s log satisfies `ok`. */
function awaitBalance(
  process: ManagedProcess,
  up: string,
  down: string,
  ok: (n: number) => boolean,
  what: string,
  timeoutMs?: number,
): Promise<LogRecord> {
  return process.waitForState(
    (records) => ok(balance(records, up, down)) ? (records.at(-1) ?? {}) : undefined,
    what,
    timeoutMs === undefined ? {} : { timeoutMs },
  );
}

/**
 * A loopback port found free in 20000–32767 (inside upstream's allowed range, outside the
 * ephemeral one), for what cannot bind port 0 and report the port: the WebSocket agent link
 * (`--knp-websocket-port=0` means "off"), upstream's Go binaries, etcd and kube-apiserver. It
 * has a race — another process may take the port before the binary binds it.
 */
export function foundFreePort(): number {
  for (let i = 0; i < 200; i++) {
    const port = 20000 + Math.floor(Math.random() * 12768);
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return port;
    } catch { /* taken */ }
  }
  throw new Error("no free port found");
}

/** Options of {@linkcode startServer}. */
export interface ServerProcessOptions {
  /** Frontend on a UDS (default) or on TCP with mTLS. */
  frontend?: "uds" | "tcp";
  /** Agent link agents started with `startAgent(server)` use. @default "grpc" */
  link?: AgentLink;
  /**
   * Agent port; default 0 (the server binds a free one and reports it). Only a restart on the
   * port an earlier server reported needs it: agents reconnect to the port they were given.
   */
  agentPort?: number;
  /**
   * Port of the WebSocket agent link (with `link: "websocket"`); default: one found free (see
   * {@linkcode foundFreePort}). A restart passes the port an earlier server reported.
   */
  websocketPort?: number;
  extraArgs?: string[];
  env?: Record<string, string>;
}

/** How agents reach the server: gRPC (upstream's) or knp's WebSocket link. */
export type AgentLink = "grpc" | "websocket";

/** Both links, for tests that must pass over each. */
export const AGENT_LINKS: readonly AgentLink[] = ["grpc", "websocket"];

/** A running proxy-server process. */
export interface ServerProcess extends AsyncDisposable {
  process: ManagedProcess;
  link: AgentLink;
  /** WebSocket agent link port (0 when the link is gRPC). */
  websocketPort: number;
  udsPath: string;
  /** TCP frontend port (0 with the UDS frontend). */
  serverPort: number;
  agentPort: number;
  healthPort: number;
  adminPort: number;
  pki: PkiFiles;
  /** Fetches a path on the health port. */
  health(path: string): Promise<Response>;
  /** The status of a path on the health port (body dropped). */
  status(path: string): Promise<number>;
  /**
   * Resolves once the server holds exactly `n` agents, counted from its "agent connected" and
   * "agent disconnected" log records (/readyz is 200 iff n > 0).
   */
  agents(n: number, timeoutMs?: number): Promise<void>;
}

function serverArgs(options: ServerProcessOptions, files: PkiFiles, udsPath: string): string[] {
  const link = options.link ?? "grpc";
  return [
    `--agent-port=${options.agentPort ?? 0}`,
    "--health-port=0",
    "--admin-port=0",
    "--agent-bind-address=127.0.0.1",
    "--health-bind-address=127.0.0.1",
    `--cluster-cert=${files.serverCert}`,
    `--cluster-key=${files.serverKey}`,
    `--cluster-ca-cert=${files.caCert}`,
    "--server-id=test-server",
    ...(options.frontend === "tcp"
      ? [
        "--server-port=0",
        "--server-bind-address=127.0.0.1",
        `--server-cert=${files.serverCert}`,
        `--server-key=${files.serverKey}`,
        `--server-ca-cert=${files.caCert}`,
      ]
      : ["--server-port=0", `--uds-name=${udsPath}`]),
    ...(link === "websocket"
      ? [`--knp-websocket-port=${options.websocketPort ?? foundFreePort()}`]
      : []),
    ...(options.extraArgs ?? []),
  ];
}

/**
 * Runs `server/main.ts` with `flags` and exactly the permissions they compute; resolves with the
 * process and the ports of its "proxy server started" record. On failure the process is stopped
 * and the error carries its log.
 */
export async function spawnServer(
  name: string,
  flags: string[],
  env?: Record<string, string>,
): Promise<{ process: ManagedProcess; ports: Record<string, number> }> {
  const args = ["run", ...serverRunFlags(flags), "server/main.ts", ...flags];
  const process = new ManagedProcess(name, args, env);
  try {
    return { process, ports: listening(await process.waitForLog("proxy server started")) };
  } catch (err) {
    await process.stop();
    throw new Error(`${err}\n--- server log ---\n${process.log}`);
  }
}

/** Starts `server/main.ts` with upstream flags on port 0 and awaits its "proxy server started". */
export async function startServer(options: ServerProcessOptions = {}): Promise<ServerProcess> {
  const { files } = await testPki();
  const udsDir = await Deno.makeTempDir({ prefix: "knp-uds-" });
  const udsPath = `${udsDir}/konnectivity-server.socket`;
  const link = options.link ?? "grpc";
  let spawned: Awaited<ReturnType<typeof spawnServer>>;
  try {
    spawned = await spawnServer("server", serverArgs(options, files, udsPath), options.env);
  } catch (err) {
    await Deno.remove(udsDir, { recursive: true }).catch(() => {});
    throw err;
  }
  const { process, ports } = spawned;
  const healthPort = ports.healthPort ?? 0;
  return {
    process,
    link,
    websocketPort: link === "websocket" ? ports.websocketPort ?? 0 : 0,
    udsPath,
    serverPort: options.frontend === "tcp" ? ports.serverPort ?? 0 : 0,
    agentPort: ports.agentPort ?? 0,
    healthPort,
    adminPort: ports.adminPort ?? 0,
    pki: files,
    health: (path) => fetch(`http://127.0.0.1:${healthPort}${path}`),
    status: (path) => httpStatus(`http://127.0.0.1:${healthPort}${path}`),
    agents: async (n, timeoutMs) => {
      const what = `${n} connected agent(s)`;
      await awaitBalance(
        process,
        "agent connected",
        "agent disconnected",
        (m) => m === n,
        what,
        timeoutMs,
      );
    },
    async [Symbol.asyncDispose]() {
      await process.stop();
      await Deno.remove(udsDir, { recursive: true }).catch(() => {});
    },
  };
}

/** A running proxy-agent process. */
export interface AgentProcess extends AsyncDisposable {
  process: ManagedProcess;
  healthPort: number;
  adminPort: number;
  /**
   * Resolves once the agent holds a server connection (what /readyz reports), counted from its
   * "connected to proxy server" and "lost connection to proxy server" log records.
   */
  ready(timeoutMs?: number): Promise<void>;
  /** Resolves once the agent holds no server connection (/readyz answers 503). */
  notReady(timeoutMs?: number): Promise<void>;
}

/**
 * Turns the negotiated WebSocket link off, so the "grpc" link is gRPC end to end (when the agent
 * has `--knp-fast-link`).
 */
const FAST_LINK_OFF: readonly string[] = AGENT_FLAGS.some((f) => f.name === "knp-fast-link")
  ? ["--knp-fast-link=false"]
  : [];

/**
 * A test agent's flags: loopback, throwaway PKI, fast sync, ports 0; the WebSocket link when given,
 * else gRPC (`--knp-fast-link=false`) unless `negotiated` (the default link flags: a knp server
 * switches the agent to the WebSocket link on its agent port).
 */
export function agentArgs(
  agentPort: number,
  websocketPort: number,
  files: PkiFiles,
  agentId: string,
  negotiated = false,
): string[] {
  return [
    "--proxy-server-host=127.0.0.1",
    `--proxy-server-port=${agentPort}`,
    `--ca-cert=${files.caCert}`,
    `--agent-cert=${files.clientCert}`,
    `--agent-key=${files.clientKey}`,
    "--health-server-port=0",
    "--health-server-host=127.0.0.1",
    "--admin-server-port=0",
    "--sync-interval=100ms",
    "--sync-interval-cap=1s",
    "--probe-interval=100ms",
    `--agent-id=${agentId}`,
    ...(websocketPort
      ? [`--knp-websocket-port=${websocketPort}`]
      : negotiated
      ? []
      : FAST_LINK_OFF),
  ];
}

const CONNECTED = "connected to proxy server";
const LOST = "lost connection to proxy server";

/** Starts `agent/main.ts` against a server's agent port; awaits its "agent link" record. */
export async function startAgent(
  target: number | ServerProcess,
  options: {
    agentId?: string;
    extraArgs?: string[];
    waitReady?: boolean;
    env?: Record<string, string>;
    /** Default link flags (no `--knp-fast-link=false`): the link is negotiated. */
    negotiated?: boolean;
  } = {},
): Promise<AgentProcess> {
  const { files } = await testPki();
  // Given the server handle, the agent uses that server's link.
  const agentPort = typeof target === "number" ? target : target.agentPort;
  const websocketPort = typeof target === "number" ? 0 : target.websocketPort;
  const agentId = options.agentId ?? crypto.randomUUID();
  const agentFlags = [
    ...agentArgs(agentPort, websocketPort, files, agentId, options.negotiated),
    ...(options.extraArgs ?? []),
  ];
  const args = ["run", ...agentPermissionFlags(agentFlags), "agent/main.ts", ...agentFlags];
  const process = new ManagedProcess("agent", args, options.env);
  const state = (ok: (n: number) => boolean, what: string) => async (timeoutMs?: number) => {
    await awaitBalance(process, CONNECTED, LOST, ok, what, timeoutMs);
  };
  try {
    const ports = listening(await process.waitForLog("agent link"));
    const handle: AgentProcess = {
      process,
      healthPort: ports.healthPort ?? 0,
      adminPort: ports.adminPort ?? 0,
      ready: state((n) => n > 0, "server connection"),
      notReady: state((n) => n <= 0, "loss of every server connection"),
      async [Symbol.asyncDispose]() {
        await process.stop();
      },
    };
    if (options.waitReady ?? true) await handle.ready();
    return handle;
  } catch (err) {
    await process.stop();
    throw new Error(`${err}\n--- agent log ---\n${process.log}`);
  }
}

/**
 * The server's connection-table gauges as its debug records report them (`--v=5`): `pending`
 * (pending_backend_dials), `established` (established_connections) and `frontends`
 * (grpc_connections{service_method="Proxy"}).
 */
export interface TableGauges {
  pending: number;
  established: number;
  frontends: number;
}

/**
 * The server's debug records that carry {@linkcode TableGauges}: one at every change of those
 * gauges, so the latest one is the tables' state.
 */
const TABLE_RECORDS: ReadonlySet<string> = new Set([
  "frontend connection started",
  "dial pending",
  "connection established",
  "frontend connection ended",
]);

/** The latest record from `from` on whose `msg` is in `messages`, or undefined. */
function latest(
  records: readonly LogRecord[],
  messages: ReadonlySet<string>,
  from: number,
): LogRecord | undefined {
  for (let i = records.length - 1; i >= from; i--) {
    const record = records[i];
    if (record !== undefined && messages.has(record.msg ?? "")) return record;
  }
  return undefined;
}

/**
 * Resolves with the server's latest table record (from `options.from` on) once its gauges satisfy
 * `ok`. The server must run with `--v=5`. Taking `from` before opening the connections the wait is
 * about makes sure their records are the ones read. Then read /metrics once to assert.
 */
export function awaitTables(
  process: ManagedProcess,
  ok: (gauges: TableGauges) => boolean,
  what: string,
  options: WaitForLogOptions = {},
): Promise<LogRecord> {
  const from = options.from ?? 0;
  return process.waitForState(
    (records) => {
      const record = latest(records, TABLE_RECORDS, from);
      if (record === undefined) return undefined;
      const gauges = {
        pending: Number(record["pending"]),
        established: Number(record["established"]),
        frontends: Number(record["frontends"]),
      };
      return ok(gauges) ? record : undefined;
    },
    what,
    options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs },
  );
}

const HTTP_CONNECTION_RECORDS: ReadonlySet<string> = new Set([
  "http-connect connection opened",
  "http-connect connection closed",
]);

/**
 * Resolves once the server's latest HTTP-CONNECT connection record (`--v=5`; opened and closed
 * each carry the open count, the http_connections gauge) reports `n` open connections.
 */
export function awaitHttpConnections(
  process: ManagedProcess,
  n: number,
  options: WaitForLogOptions = {},
): Promise<LogRecord> {
  const from = options.from ?? 0;
  return process.waitForState(
    (records) => {
      const record = latest(records, HTTP_CONNECTION_RECORDS, from);
      return record !== undefined && record["connections"] === n ? record : undefined;
    },
    `${n} open HTTP-CONNECT connection(s)`,
    options.timeoutMs === undefined ? {} : {
      timeoutMs: options.timeoutMs,
    },
  );
}

/**
 * Polls `check()` every 50 ms until it is true. Only for state a process we did not write exposes
 * without announcing it (upstream's Go binaries: their /metrics, /readyz, UDS); our processes log
 * every change tests wait for (at `--v=5`: {@linkcode awaitTables}, {@linkcode awaitHttpConnections}),
 * awaited with {@linkcode ManagedProcess.waitForLog} instead.
 */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}
