/**
 * `ClientSet`: the agent's sync loop. It keeps one {@linkcode AgentClient} per distinct server,
 * opening new connections (each lands on some server behind the address) until it holds
 * `servercount` distinct server IDs, and reconnects with jittered backoff when servers go away.
 *
 * Beyond upstream: every server stream is watched ({@linkcode LivenessStream}), so a server that
 * vanished without closing its connections is dropped within seconds; a new connection to a
 * server ID already held replaces the held one when that one fails a probe (upstream keeps the
 * dead one and rejects the new as a duplicate); and when the configured host names several
 * addresses (a list, or a DNS name with several records; see `server_addresses.ts`) the set
 * connects to each address directly instead of re-dialing one address until it is lucky.
 *
 * @module
 */

import { errorMessage, KnpError } from "@knp/core/errors";
import { type Logger, nullLogger } from "@knp/core/log";
import type { PacketStream } from "@knp/transport/packet_stream";
import { realTimers, type Timers } from "@knp/core/timers";
import { AgentClient, type AgentClientOptions } from "./agent_client.ts";
import { DEFAULT_LIVENESS, type LivenessOptions, LivenessStream } from "./server_liveness.ts";
import type { ServerAddress } from "./server_addresses.ts";
import type { ServerCounter } from "./server_count.ts";

export type { ServerAddress };

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
  /** The link the connection runs on (logged with it): upstream's gRPC or knp's WebSocket. */
  link?: "grpc" | "websocket" | undefined;
  /** Closes the underlying connection. */
  close(): void;
}

/**
 * Opens a new connection to the server address, or to `address` (one of several the configured
 * host names). A refusal may carry the server's retry hint as a `retryAfterMs` property (on the
 * error or its `cause`); the set waits at least that long.
 */
export type ServerConnector = (address?: ServerAddress) => Promise<ServerConnection>;

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
  /** Liveness probes of server streams ({@linkcode DEFAULT_LIVENESS}); "off" disables them. */
  liveness?: LivenessOptions | "off";
  /**
   * The addresses to connect to directly, resolved again at every sync round that needs a
   * connection. One address or none: every attempt goes to the connector's own address.
   */
  addresses?: () => Promise<ServerAddress[]>;
  /**
   * Where the count of servers to hold comes from besides the `servercount` headers (the server
   * Leases, see `server_count.ts`); a change runs a sync round at once.
   */
  serverCounter?: ServerCounter;
}

/** One held server: its client, connection, watched stream and the address it was reached at. */
interface Held {
  client: AgentClient;
  connection: ServerConnection;
  stream: LivenessStream;
  address: ServerAddress | undefined;
}

/**
 * Ends a connection the set does not keep: its stream first (closing a gRPC channel lets the
 * calls on it go on, so the server would keep a stream of this agent), then the connection.
 */
function discard(connection: ServerConnection): void {
  connection.stream.close();
  connection.close();
}

function isDuplicate(err: unknown): boolean {
  return err instanceof KnpError && err.code === "PROTOCOL" && err.message.startsWith("duplicate");
}

/** The agent's set of server connections. */
export class ClientSet {
  #options: ClientSetOptions;
  #clients = new Map<string, Held>();
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

  /** Servers to hold: the `serverCounter`'s, else the last `servercount` (at least 1). */
  get serverCount(): number {
    return this.#options.serverCounter?.count(this.#serverCount) ?? Math.max(1, this.#serverCount);
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

  /** Endpoint dials in progress over all servers. */
  get pendingDials(): number {
    let n = 0;
    for (const { client } of this.#clients.values()) n += client.pendingDials;
    return n;
  }

  /** Starts the sync loop; the first attempt is immediate. */
  start(): void {
    this.#options.serverCounter?.onChange(() => {
      if (this.#syncing) this.#again = true;
      else if (!this.#stopped && this.#clients.size < this.serverCount) this.#schedule(0);
    });
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
      if (isDuplicate(err)) {
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

  #liveness(): LivenessOptions | undefined {
    const liveness = this.#options.liveness ?? DEFAULT_LIVENESS;
    return liveness === "off" ? undefined : liveness;
  }

  async #connectOnce(): Promise<void> {
    if (this.#draining || this.#stopped) return;
    if (!this.#options.syncForever && this.#clients.size >= this.serverCount) return;
    const addresses = (await this.#options.addresses?.()) ?? [];
    if (addresses.length > 1) return await this.#connectEach(addresses);
    const address = addresses[0];
    await this.#adopt(await this.#options.connect(address), address);
  }

  /**
   * Direct mode: connects at once to every address no held server was reached at, and adopts
   * what answered. Fails (backoff) only when every attempt failed.
   */
  async #connectEach(addresses: ServerAddress[]): Promise<void> {
    const held = new Set([...this.#clients.values()].map((h) => h.address?.host));
    const targets = addresses.filter((a) => !held.has(a.host));
    const results = await Promise.allSettled(targets.map((a) => this.#options.connect(a)));
    let failure: unknown;
    let adopted = false;
    for (const [i, result] of results.entries()) {
      if (result.status === "rejected") {
        failure ??= result.reason;
        this.#log.info("cannot connect to proxy server address", {
          address: targets[i]!.host,
          error: errorMessage(result.reason),
        });
        continue;
      }
      adopted = true;
      try {
        await this.#adopt(result.value, targets[i]);
      } catch (err) {
        if (!isDuplicate(err)) throw err;
      }
    }
    if (!adopted && failure !== undefined) throw failure;
  }

  /**
   * Takes a fresh connection: a new server is added; one already held is a duplicate unless the
   * held connection fails a probe, then the fresh one replaces it.
   */
  async #adopt(connection: ServerConnection, address: ServerAddress | undefined): Promise<void> {
    if (this.#stopped) return discard(connection);
    this.#serverCount = connection.serverCount;
    const held = this.#clients.get(connection.serverId);
    if (held) {
      const timeoutMs = (this.#liveness() ?? DEFAULT_LIVENESS).timeoutMs;
      const alive = await held.stream.probe(timeoutMs);
      if (this.#stopped) return discard(connection);
      const now = this.#clients.get(connection.serverId);
      if (alive || (now !== undefined && now !== held)) {
        discard(connection);
        throw new KnpError("PROTOCOL", `duplicate server: ${connection.serverId}`);
      }
      if (now === held) this.#replaceStale(held);
    }
    this.#add(connection, address);
  }

  /** Drops a held connection that failed its probe, logging its loss. */
  #replaceStale(held: Held): void {
    const serverId = held.client.serverId;
    this.#clients.delete(serverId);
    this.#log.warn("replacing stale connection to proxy server", {
      serverID: serverId,
      reason: "a new connection reached the same server ID and the held one failed a probe",
    });
    held.client.close();
    held.connection.close();
    this.#log.warn("lost connection to proxy server", {
      serverID: serverId,
      error: "stale: answered no liveness probe",
    });
  }

  #add(connection: ServerConnection, address: ServerAddress | undefined): void {
    const log = this.#log;
    const stream = new LivenessStream(
      connection.stream,
      this.#liveness(),
      (error) => {
        log.warn("proxy server answered no liveness probe; dropping the connection", {
          serverID: connection.serverId,
          error: error.message,
        });
      },
      this.#timers,
      log.with({ serverID: connection.serverId }),
    );
    const client = new AgentClient({
      ...this.#options,
      stream,
      serverId: connection.serverId,
      flow: connection.flow,
      logger: log,
      timers: this.#timers,
    });
    this.#clients.set(connection.serverId, { client, connection, stream, address });
    log.info("connected to proxy server", {
      serverID: connection.serverId,
      serverCount: connection.serverCount,
      flowControl: connection.flow !== undefined,
      ...(connection.link ? { link: connection.link } : {}),
      ...(address ? { address: address.host } : {}),
    });
    client.start();
    if (this.#draining) client.drain();
    client.done.then((error) => this.#lost(client, connection, error));
  }

  #lost(client: AgentClient, connection: ServerConnection, error: Error | undefined): void {
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
  }
}
