/**
 * `ClientSet`: the agent's sync loop. It keeps one {@linkcode AgentClient} per distinct server,
 * opening new connections (each lands on some server behind the address) until it holds
 * `servercount` distinct server IDs, and reconnects with jittered backoff when servers go away.
 *
 * @module
 */

import { errorMessage, KnpError } from "@knp/core/errors";
import { type Logger, nullLogger } from "@knp/core/log";
import type { PacketStream } from "@knp/transport/packet_stream";
import { realTimers, type Timers } from "@knp/core/timers";
import { AgentClient, type AgentClientOptions } from "./agent_client.ts";

/** One freshly connected server stream, after its response headers. */
export interface ServerConnection {
  /** The packet stream to the server. */
  stream: PacketStream;
  /** The server's id (its `serverid` header). */
  serverId: string;
  /** How many servers there are (its `servercount` header). */
  serverCount: number;
  /** Per-connection flow control, when the server agreed to it. */
  flow?: { sendWindow: number; recvWindow: number } | undefined;
  /** Closes the underlying connection. */
  close(): void;
}

/**
 * Opens a new connection to the server address. A refusal may carry the server's retry hint as
 * a `retryAfterMs` property (on the error or its `cause`); the set waits at least that long.
 */
export type ServerConnector = () => Promise<ServerConnection>;

/** The server's retry hint on a connect error (`retryAfterMs` on it or a cause), if any. */
export function retryAfterOf(err: unknown): number | undefined {
  for (let e = err, depth = 0; typeof e === "object" && e !== null && depth < 4; depth++) {
    const ms = (e as { retryAfterMs?: unknown }).retryAfterMs;
    if (typeof ms === "number" && ms >= 0 && Number.isFinite(ms)) return ms;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/** Options of {@linkcode ClientSet}. */
export interface ClientSetOptions extends Omit<AgentClientOptions, "stream" | "serverId"> {
  /** Opens a connection to the server address. */
  connect: ServerConnector;
  /** First delay between connection attempts. @default 1000 */
  syncIntervalMs?: number;
  /** Largest delay between connection attempts. @default 10000 */
  syncIntervalCapMs?: number;
  /** Keep connecting even when the server count is reached. @default false */
  syncForever?: boolean;
  /** Random source for the retry jitter. */
  random?: () => number;
}

/** The agent's set of server connections. */
export class ClientSet {
  #options: ClientSetOptions;
  #clients = new Map<string, { client: AgentClient; connection: ServerConnection }>();
  #timers: Timers;
  #log: Logger;
  #random: () => number;
  #serverCount = 0;
  #draining = false;
  #stopped = false;
  #timer: number | undefined;
  #delay: number;
  /** A sync round (connect) is in flight; it schedules the next round itself. */
  #syncing = false;
  /** Something asked for a round while one was in flight: run the next one at once. */
  #again = false;

  /** A set that starts connecting on `start()`. */
  constructor(options: ClientSetOptions) {
    this.#options = options;
    this.#timers = options.timers ?? realTimers;
    this.#log = options.logger ?? nullLogger;
    this.#random = options.random ?? Math.random;
    this.#delay = options.syncIntervalMs ?? 1000;
  }

  /** Connected servers. */
  get size(): number {
    return this.#clients.size;
  }

  /** Server IDs currently connected. */
  get serverIds(): string[] {
    return [...this.#clients.keys()];
  }

  /** Servers the agent is trying to hold (last `servercount` received, at least 1). */
  get serverCount(): number {
    return Math.max(1, this.#serverCount);
  }

  /** Ready iff at least one server stream is up. */
  get ready(): boolean {
    return this.#clients.size > 0;
  }

  /** Whether the agent is draining (no new dials). */
  get draining(): boolean {
    return this.#draining;
  }

  /** Open endpoint connections over all servers. */
  get connections(): number {
    let n = 0;
    for (const { client } of this.#clients.values()) n += client.connections;
    return n;
  }

  /** Starts the sync loop; the first attempt is immediate. */
  start(): void {
    this.#schedule(0);
  }

  /** Sends DRAIN on every stream and stops opening new ones; proxying goes on. */
  drain(): void {
    if (this.#draining) return;
    this.#draining = true;
    for (const { client } of this.#clients.values()) client.drain();
  }

  /**
   * Graceful stop: refuse new dials (with a draining error), let open connections finish for at
   * most `graceMs`, then {@linkcode stop}.
   */
  async shutdown(graceMs: number, agentId = "agent"): Promise<void> {
    this.drain();
    const reason = `agent ${agentId} is shutting down (draining); dial refused`;
    for (const { client } of this.#clients.values()) client.refuseNewDials(reason);
    const deadline = this.#timers.now() + graceMs;
    while (this.connections > 0 && this.#timers.now() < deadline) {
      await new Promise<void>((resolve) => this.#timers.setTimeout(resolve, 50));
    }
    // Tests read why the agent stopped: every connection finished, or the grace ran out.
    this.#log.debug("shutdown: stopping", { openConnections: this.connections });
    this.stop();
  }

  /** Stops the loop and closes every connection. */
  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) this.#timers.clearTimeout(this.#timer);
    for (const { client, connection } of this.#clients.values()) {
      client.close();
      connection.close();
    }
    this.#clients.clear();
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    // One loop only: a new schedule replaces the pending one.
    if (this.#timer !== undefined) this.#timers.clearTimeout(this.#timer);
    this.#timer = this.#timers.setTimeout(() => {
      this.#timer = undefined;
      this.#sync();
    }, ms);
  }

  #jitter(ms: number): number {
    return ms + ms * 0.1 * this.#random();
  }

  async #sync(): Promise<void> {
    if (this.#syncing) {
      this.#again = true;
      return;
    }
    this.#syncing = true;
    const base = this.#options.syncIntervalMs ?? 1000;
    const cap = this.#options.syncIntervalCapMs ?? 10_000;
    let next: number;
    let failed = false;
    try {
      await this.#connectOnce();
      this.#delay = base;
      next = this.#jitter(base);
    } catch (err) {
      if (
        err instanceof KnpError && err.code === "PROTOCOL" && err.message.startsWith("duplicate")
      ) {
        this.#delay = base;
        next = this.#jitter(base);
      } else {
        // The server's retry hint (connect rate) is a floor under the backoff, jittered too.
        const hint = retryAfterOf(err);
        next = Math.max(this.#jitter(this.#delay), hint === undefined ? 0 : this.#jitter(hint));
        this.#log.warn("cannot connect to proxy server", {
          error: errorMessage(err),
          retryInMs: Math.round(next),
          ...(hint === undefined ? {} : { serverRetryAfterMs: hint }),
        });
        this.#delay = Math.min(cap, this.#delay * 1.5);
        failed = true;
      }
    }
    this.#syncing = false;
    if (this.#again && !failed) next = 0;
    this.#again = false;
    this.#schedule(next);
  }

  async #connectOnce(): Promise<void> {
    if (this.#draining || this.#stopped) return;
    if (!this.#options.syncForever && this.#clients.size >= this.serverCount) return;
    const connection = await this.#options.connect();
    if (this.#stopped) return connection.close();
    if (this.#clients.has(connection.serverId)) {
      connection.close();
      throw new KnpError("PROTOCOL", `duplicate server: ${connection.serverId}`);
    }
    this.#serverCount = connection.serverCount;
    const client = new AgentClient({
      ...this.#options,
      stream: connection.stream,
      serverId: connection.serverId,
      flow: connection.flow,
      logger: this.#log,
      timers: this.#timers,
    });
    this.#clients.set(connection.serverId, { client, connection });
    this.#log.info("connected to proxy server", {
      serverID: connection.serverId,
      serverCount: connection.serverCount,
      flowControl: connection.flow !== undefined,
    });
    client.start();
    if (this.#draining) client.drain();
    client.done.then((error) => {
      if (this.#clients.get(connection.serverId)?.client !== client) return;
      this.#clients.delete(connection.serverId);
      connection.close();
      this.#log.warn("lost connection to proxy server", {
        serverID: connection.serverId,
        error: error ? errorMessage(error) : undefined,
      });
      if (this.#syncing) this.#again = true;
      else if (this.#timer === undefined) this.#schedule(0);
      else this.#schedule(this.#jitter(this.#options.syncIntervalMs ?? 1000) * this.#random());
    });
  }
}
