/**
 * Test framework: real server and agent processes (`deno run server/main.ts`, `agent/main.ts`)
 * with upstream-style flags, throwaway certificates, and real backends on loopback.
 *
 * Every handle is `AsyncDisposable`, so `await using` tears it down even when a test fails.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { generateTestPki, writeTestPki } from "../testing/certs.ts";

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

/** A free TCP port in 20000–32767 (inside upstream's allowed range, outside the ephemeral one). */
export function freePort(): number {
  for (let i = 0; i < 200; i++) {
    const port = 20000 + Math.floor(Math.random() * 12768);
    try {
      const l = Deno.listen({ hostname: "127.0.0.1", port });
      l.close();
      return port;
    } catch { /* taken */ }
  }
  throw new Error("no free port found");
}

/** Polls `url` until it answers `status` or `timeoutMs` passes. */
export async function waitForHttp(url: string, status = 200, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    try {
      const res = await fetch(url);
      await res.body?.cancel();
      if (res.status === status) return;
      last = `status ${res.status}`;
    } catch (err) {
      last = String(err);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${url} to answer ${status} (last: ${last})`);
}

/** A child process with its log captured. */
export class ManagedProcess implements AsyncDisposable {
  readonly name: string;
  readonly child: Deno.ChildProcess;
  #log: string[] = [];
  #status: Promise<Deno.CommandStatus>;

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
    this.#drain(this.child.stdout);
    this.#drain(this.child.stderr);
    this.#status = this.child.status;
  }

  async #drain(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of stream) this.#log.push(decoder.decode(chunk, { stream: true }));
  }

  /** Everything the process wrote so far. */
  get log(): string {
    return this.#log.join("");
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

/** Options of {@linkcode startServer}. */
export interface ServerProcessOptions {
  /** Frontend on a UDS (default) or on TCP with mTLS. */
  frontend?: "uds" | "tcp";
  /** Agent link agents started with `startAgent(server)` use. @default "grpc" */
  link?: AgentLink;
  agentPort?: number;
  /** Port of the WebSocket agent link (with `link: "websocket"`); default: a free one. */
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
  serverPort: number;
  agentPort: number;
  healthPort: number;
  adminPort: number;
  pki: PkiFiles;
  /** Fetches a path on the health port. */
  health(path: string): Promise<Response>;
}

/** Starts `server/main.ts` with upstream flags and waits for /healthz. */
export async function startServer(options: ServerProcessOptions = {}): Promise<ServerProcess> {
  const { dir, files } = await testPki();
  const udsDir = await Deno.makeTempDir({ prefix: "knp-uds-" });
  const udsPath = `${udsDir}/konnectivity-server.socket`;
  const agentPort = options.agentPort ?? freePort();
  const healthPort = freePort();
  const adminPort = freePort();
  const serverPort = options.frontend === "tcp" ? freePort() : 0;
  const link = options.link ?? "grpc";
  const websocketPort = link === "websocket" ? options.websocketPort ?? freePort() : 0;
  const args = [
    "run",
    "-A",
    "server/main.ts",
    `--agent-port=${agentPort}`,
    `--health-port=${healthPort}`,
    `--admin-port=${adminPort}`,
    "--agent-bind-address=127.0.0.1",
    "--health-bind-address=127.0.0.1",
    `--cluster-cert=${files.serverCert}`,
    `--cluster-key=${files.serverKey}`,
    `--cluster-ca-cert=${files.caCert}`,
    "--server-id=test-server",
    ...(options.frontend === "tcp"
      ? [
        `--server-port=${serverPort}`,
        "--server-bind-address=127.0.0.1",
        `--server-cert=${files.serverCert}`,
        `--server-key=${files.serverKey}`,
        `--server-ca-cert=${files.caCert}`,
      ]
      : ["--server-port=0", `--uds-name=${udsPath}`]),
    ...(websocketPort ? [`--knp-websocket-port=${websocketPort}`] : []),
    ...(options.extraArgs ?? []),
  ];
  const process = new ManagedProcess("server", args, options.env);
  const handle: ServerProcess = {
    process,
    link,
    websocketPort,
    udsPath,
    serverPort,
    agentPort,
    healthPort,
    adminPort,
    pki: files,
    health: (path) => fetch(`http://127.0.0.1:${healthPort}${path}`),
    async [Symbol.asyncDispose]() {
      await process.stop();
      await Deno.remove(udsDir, { recursive: true }).catch(() => {});
    },
  };
  try {
    await Promise.race([
      waitForHttp(`http://127.0.0.1:${healthPort}/healthz`),
      process.status.then((s) => {
        throw new Error(`server exited early with ${s.code}`);
      }),
    ]);
  } catch (err) {
    await process.stop();
    throw new Error(`${err}\n--- server log ---\n${process.log}`);
  }
  void dir;
  return handle;
}

/** A running proxy-agent process. */
export interface AgentProcess extends AsyncDisposable {
  process: ManagedProcess;
  healthPort: number;
  adminPort: number;
  /** Waits until /readyz says the agent holds a server connection. */
  ready(timeoutMs?: number): Promise<void>;
}

/** Starts `agent/main.ts` against a server's agent port. */
export async function startAgent(
  target: number | ServerProcess,
  options: { agentId?: string; extraArgs?: string[]; waitReady?: boolean } = {},
): Promise<AgentProcess> {
  const { files } = await testPki();
  // Given the server handle, the agent uses that server's link.
  const agentPort = typeof target === "number" ? target : target.agentPort;
  const websocketPort = typeof target === "number" ? 0 : target.websocketPort;
  const healthPort = freePort();
  const adminPort = freePort();
  const args = [
    "run",
    "-A",
    "agent/main.ts",
    "--proxy-server-host=127.0.0.1",
    `--proxy-server-port=${agentPort}`,
    `--ca-cert=${files.caCert}`,
    `--agent-cert=${files.clientCert}`,
    `--agent-key=${files.clientKey}`,
    `--health-server-port=${healthPort}`,
    "--health-server-host=127.0.0.1",
    `--admin-server-port=${adminPort}`,
    "--sync-interval=100ms",
    "--sync-interval-cap=1s",
    "--probe-interval=100ms",
    `--agent-id=${options.agentId ?? crypto.randomUUID()}`,
    ...(websocketPort ? [`--knp-websocket-port=${websocketPort}`] : []),
    ...(options.extraArgs ?? []),
  ];
  const process = new ManagedProcess("agent", args);
  const handle: AgentProcess = {
    process,
    healthPort,
    adminPort,
    ready: (timeoutMs = 15_000) =>
      waitForHttp(`http://127.0.0.1:${healthPort}/readyz`, 200, timeoutMs),
    async [Symbol.asyncDispose]() {
      await process.stop();
    },
  };
  try {
    if (options.waitReady ?? true) await handle.ready();
    else await waitForHttp(`http://127.0.0.1:${healthPort}/healthz`);
  } catch (err) {
    await process.stop();
    throw new Error(`${err}\n--- agent log ---\n${process.log}`);
  }
  return handle;
}

/** Waits until `check()` is true (for state observed through HTTP or counters). */
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
