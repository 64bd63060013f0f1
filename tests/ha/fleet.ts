/**
 * Helpers of the high-availability tests: knp servers with distinct server IDs and a shared
 * `--server-count`, the set of servers an agent holds (from its "connected to proxy server" and
 * "lost connection to proxy server" records), a request through one server's frontend, and
 * upstream's Go binaries (`KNP_UPSTREAM_SERVER`, `KNP_UPSTREAM_AGENT`) as members of the fleet.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createSingleUseTunnel } from "@knp/client";
import {
  type AgentLink,
  eventually,
  foundFreePort,
  type LogRecord,
  type ManagedProcess,
  type PkiFiles,
  type ServerProcess,
  startServer,
  testPki,
} from "../framework.ts";
import { httpRequest } from "../http_client.ts";

/** How many servers every test fleet has. */
export const SERVER_COUNT = 3;

/** Starts a knp server `id` of a fleet of {@linkcode SERVER_COUNT}. */
export function startFleetServer(
  id: string,
  options: { link?: AgentLink; agentPort?: number; websocketPort?: number; extraArgs?: string[] } =
    {},
): Promise<ServerProcess> {
  return startServer({
    ...(options.link ? { link: options.link } : {}),
    ...(options.agentPort ? { agentPort: options.agentPort } : {}),
    ...(options.websocketPort ? { websocketPort: options.websocketPort } : {}),
    extraArgs: [
      `--server-count=${SERVER_COUNT}`,
      `--server-id=${id}`,
      ...(options.extraArgs ?? []),
    ],
  });
}

/** The server IDs an agent holds after `records` (connected minus lost). */
export function heldServers(records: readonly LogRecord[]): Set<string> {
  const held = new Set<string>();
  for (const r of records) {
    const id = String(r["serverID"] ?? "");
    if (r.msg === "connected to proxy server") held.add(id);
    else if (r.msg === "lost connection to proxy server") held.delete(id);
  }
  return held;
}

/**
 * Resolves once `agent` holds exactly `ids` and, with `fresh`, has connected to server `fresh`
 * at or after record `since` (a new connection, not the one it held before).
 */
export async function awaitHeld(
  agent: ManagedProcess,
  ids: string[],
  options: { timeoutMs?: number; fresh?: string; since?: number } = {},
): Promise<void> {
  const want = [...ids].sort().join(",");
  await agent.waitForState(
    (records) => {
      if ([...heldServers(records)].sort().join(",") !== want) return undefined;
      if (options.fresh === undefined) return records.at(-1) ?? {};
      return records.slice(options.since ?? 0).find((r) =>
        r.msg === "connected to proxy server" && r["serverID"] === options.fresh
      );
    },
    `servers [${want}]${options.fresh ? ` with a new connection to ${options.fresh}` : ""}`,
    options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs },
  );
}

/** GET /success of `address` through the frontend on `udsPath` (one server). */
export async function getThrough(udsPath: string, address: string): Promise<void> {
  const tunnel = createSingleUseTunnel({ udsPath });
  const conn = await tunnel.dial("tcp", address, { timeoutMs: 10_000 });
  const res = await httpRequest(conn, "GET", "/success");
  assert.equal(res.status, 200);
  assert.equal(new TextDecoder().decode(res.body), "hello");
  await tunnel.done;
}

/** Absolute paths of upstream's binaries, when given. */
export const UPSTREAM = {
  server: Deno.env.get("KNP_UPSTREAM_SERVER"),
  agent: Deno.env.get("KNP_UPSTREAM_AGENT"),
};

/** An upstream Go binary as a child process, its klog output captured. */
export class UpstreamProcess implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  #log = "";
  #waiters = new Set<{ text: string; times: number; resolve: () => void }>();
  #reading: Promise<unknown>;

  /** Starts `binary` with `args`. */
  constructor(readonly name: string, binary: string, args: string[]) {
    this.child = new Deno.Command(binary, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#reading = Promise.all([this.#read(this.child.stdout), this.#read(this.child.stderr)]);
  }

  async #read(stream: ReadableStream<Uint8Array>): Promise<void> {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      this.#log += text;
      for (const w of [...this.#waiters]) {
        if (this.count(w.text) >= w.times) (this.#waiters.delete(w), w.resolve());
      }
    }
  }

  /** Everything the binary wrote. */
  get log(): string {
    return this.#log;
  }

  /** How many times the log contains `text`. */
  count(text: string): number {
    return this.#log.split(text).length - 1;
  }

  /** Resolves once the log contains `text` `times` times (resolved by the reader; no polling). */
  waitForText(text: string, times = 1): Promise<void> {
    if (this.count(text) >= times) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#waiters.add({ text, times, resolve });
    return promise;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.child.kill("SIGKILL");
    } catch { /* gone */ }
    await this.child.status;
    await this.#reading;
  }
}

/** An upstream proxy-server in the fleet: its UDS frontend and agent port. */
export interface UpstreamServer extends AsyncDisposable {
  process: UpstreamProcess;
  udsPath: string;
  agentPort: number;
}

/** Polls a URL of an upstream binary (its klog has no line for "ready") until it answers 200. */
async function polled(url: string, process: UpstreamProcess): Promise<void> {
  let exited = false;
  process.child.status.then(() => (exited = true));
  await eventually(
    async () => {
      if (exited) throw new Error(`${process.name} exited\n${process.log}`);
      try {
        const res = await fetch(url);
        await res.body?.cancel();
        return res.status === 200;
      } catch {
        return false;
      }
    },
    url,
    20_000,
  );
}

/** Starts upstream's proxy-server `id` (UDS frontend, `--v=2`) in a fleet of 3. */
export async function startUpstreamServer(id: string): Promise<UpstreamServer> {
  const { files } = await testPki();
  const dir = await Deno.makeTempDir({ prefix: "knp-ha-upstream-" });
  const udsPath = `${dir}/s.sock`;
  const agentPort = foundFreePort();
  const healthPort = foundFreePort();
  const process = new UpstreamProcess(`upstream proxy-server ${id}`, UPSTREAM.server!, [
    "--mode=grpc",
    `--uds-name=${udsPath}`,
    "--server-port=0",
    `--agent-port=${agentPort}`,
    "--agent-bind-address=127.0.0.1",
    `--health-port=${healthPort}`,
    "--health-bind-address=127.0.0.1",
    `--admin-port=${foundFreePort()}`,
    "--admin-bind-address=127.0.0.1",
    `--cluster-cert=${files.serverCert}`,
    `--cluster-key=${files.serverKey}`,
    `--cluster-ca-cert=${files.caCert}`,
    `--server-id=${id}`,
    `--server-count=${SERVER_COUNT}`,
    "--v=2",
  ]);
  await polled(`http://127.0.0.1:${healthPort}/healthz`, process);
  await eventually(() => Deno.stat(udsPath).then(() => true, () => false), "upstream UDS");
  return {
    process,
    udsPath,
    agentPort,
    async [Symbol.asyncDispose]() {
      await process[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** An upstream proxy-agent in the fleet, and how many servers it holds (its /metrics). */
export interface UpstreamAgent extends AsyncDisposable {
  process: UpstreamProcess;
  /** `konnectivity_network_proxy_agent_open_server_connections`, read from /metrics. */
  openServerConnections(): Promise<number>;
}

/** Starts upstream's proxy-agent against `host:port` with the test's fast sync flags. */
export async function startUpstreamAgent(port: number, files?: PkiFiles): Promise<UpstreamAgent> {
  const pki = files ?? (await testPki()).files;
  const healthPort = foundFreePort();
  const process = new UpstreamProcess("upstream proxy-agent", UPSTREAM.agent!, [
    "--proxy-server-host=127.0.0.1",
    `--proxy-server-port=${port}`,
    `--ca-cert=${pki.caCert}`,
    `--agent-cert=${pki.clientCert}`,
    `--agent-key=${pki.clientKey}`,
    "--health-server-host=127.0.0.1",
    `--health-server-port=${healthPort}`,
    "--admin-bind-address=127.0.0.1",
    `--admin-server-port=${foundFreePort()}`,
    `--agent-id=upstream-${crypto.randomUUID()}`,
    "--sync-interval=100ms",
    "--sync-interval-cap=1s",
    "--probe-interval=100ms",
  ]);
  await polled(`http://127.0.0.1:${healthPort}/readyz`, process);
  return {
    process,
    async openServerConnections() {
      const text = await (await fetch(`http://127.0.0.1:${healthPort}/metrics`)).text();
      const line = text.split("\n").find((l) =>
        l.startsWith("konnectivity_network_proxy_agent_open_server_connections ")
      );
      return Number(line?.split(" ")[1] ?? NaN);
    },
    [Symbol.asyncDispose]: () => process[Symbol.asyncDispose](),
  };
}
