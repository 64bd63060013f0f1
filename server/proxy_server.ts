/**
 * `ProxyServer`: the server's protocol core. It owns the dial table (pending dials by dial ID), the
 * connection table (established connections by agent stream and connectID) and one
 * {@linkcode FrontendConnection} state machine per frontend stream. It does no I/O of its own: it
 * is handed {@linkcode PacketStream}s for frontends and agents, and time through `timers`. What
 * happens is reported on the typed channel {@linkcode ProxyServer.events}.
 *
 * Every table entry has a deadline: pending dials `backendDialTimeoutMs`, closing connections
 * `closeTimeoutMs`. Every connection leaves the tables through one path, `#teardown`.
 *
 * @module
 */

import {
  type AgentIdentifiers,
  closeDial,
  closeRequest,
  closeResponse,
  type DecodedPacket,
  dialResponse,
  type Packet,
} from "@knp/proto";
import { DEFAULT_GUARD_LIMITS, type GuardLimits } from "@knp/core/backpressure";
import { KnpError } from "@knp/core/errors";
import { type DestinationPolicy, OPEN_POLICY } from "@knp/core/destination_policy";
import { type Logger, nullLogger } from "@knp/core/log";
import type { PacketStream } from "@knp/transport/packet_stream";
import { realTimers, type Timers } from "@knp/core/timers";
import { Backend, type FlowControl } from "./backend.ts";
import {
  type BackendManager,
  coreBackendManager,
  type CoreRoutingOptions,
} from "./backend_manager.ts";
import { type AgentMetadata, validateAgentMetadata } from "./agent_handshake.ts";
import { backendGone, fromBackend } from "./agent_packets.ts";
import { ConnectionTables } from "./connection_tables.ts";
import { FrontendConnection, type FrontendDispatch } from "./frontend_connection.ts";
import { destinationRefusal } from "./destination_guard.ts";
import { attachDirectRoute, type DirectRouteOptions } from "./direct_backend.ts";
import { forwardDial, traceDial } from "./dial_trace.ts";
import { type DialLimitOptions, DialLimits } from "./overload.ts";
import { closeIdleTunnel, IdleSweeper } from "./tunnel_idle.ts";
import { type ServerEvent, ServerEvents } from "./server_events.ts";

export { FrontendConnection, type FrontendState, type HoldReason } from "./frontend_connection.ts";
export {
  type DialFailureLabel,
  type ServerEvent,
  type ServerEventListener,
  ServerEvents,
} from "./server_events.ts";

/** Error text of a dial with no agent to carry it (upstream's exact string). */
export const NO_AGENT_AVAILABLE = "No agent available";
/** Error text of a dial whose agent did not answer in time (upstream's exact string). */
export const DIAL_TIMEOUT_TEXT = "timed out waiting for backend dial";

/** Options of {@linkcode ProxyServer}. */
export interface ProxyServerOptions
  extends DialLimitOptions, DirectRouteOptions, CoreRoutingOptions {
  /** This server's id, sent to agents and frontends. */
  serverId: string;
  /** Sent to agents as `servercount`. @default 1 */
  serverCount?: number;
  /** Deadline for an agent's DIAL_RSP; 0 disables. @default 10000 */
  backendDialTimeoutMs?: number;
  /** Deadline for an agent's CLOSE_RSP after a CLOSE_REQ. @default 10000 */
  closeTimeoutMs?: number;
  /** Most dials that may wait for agents at once; more are refused as overloaded. @default 10000 */
  maxPendingDials?: number;
  /** Per-connection buffering limits toward frontends. */
  guard?: GuardLimits;
  /** Clock and timers (fake ones in tests). */
  timers?: Timers;
  /** Where the core logs. */
  logger?: Logger;
  /** Subscribed to {@linkcode ProxyServer.events} first. */
  onEvent?: (event: ServerEvent) => void;
  /** Which destinations frontends may dial; checked before an agent is picked. @default open */
  destinationPolicy?: DestinationPolicy;
}

/** The server's protocol core. */
export class ProxyServer {
  /** This server's id. */
  readonly serverId: string;
  /** How many servers agents should connect to. */
  readonly serverCount: number;
  /** The connected agents, by strategy. */
  readonly backends: BackendManager;
  /** What the core reports (dial outcomes, closed connections), for metrics and logs. */
  readonly events: ServerEvents;
  /** Which destinations frontends may dial (replaceable: self rules come once ports are bound). */
  destinationPolicy: DestinationPolicy;
  #dialTimeoutMs: number;
  #closeTimeoutMs: number;
  #maxPendingDials: number;
  #timers: Timers;
  #log: Logger;
  #t: ConnectionTables;
  #limits: DialLimits<Backend, FrontendConnection>;
  #idle: IdleSweeper<FrontendConnection> | undefined;
  #direct: ReturnType<typeof attachDirectRoute> | undefined;
  readonly #fe: FrontendDispatch = {
    packet: (conn, packet) => this.#fromFrontend(conn, packet),
    end: (conn) => this.#frontendGone(conn),
  };

  /** A core with no agents and no frontends yet. */
  constructor(options: ProxyServerOptions) {
    this.serverId = options.serverId;
    this.serverCount = options.serverCount ?? 1;
    this.backends = coreBackendManager(options);
    this.#dialTimeoutMs = options.backendDialTimeoutMs ?? 10_000;
    this.#closeTimeoutMs = options.closeTimeoutMs ?? 10_000;
    this.#maxPendingDials = options.maxPendingDials ?? 10_000;
    this.destinationPolicy = options.destinationPolicy ?? OPEN_POLICY;
    this.#timers = options.timers ?? realTimers;
    this.#log = (options.logger ?? nullLogger).with({ serverID: options.serverId });
    this.events = new ServerEvents(this.#log);
    if (options.onEvent) this.events.on(options.onEvent);
    this.#t = new ConnectionTables({
      serverId: this.serverId,
      guard: options.guard ?? DEFAULT_GUARD_LIMITS,
      timers: this.#timers,
      log: this.#log,
      events: this.events,
    });
    this.#direct = options.direct && attachDirectRoute(this.#t, options.direct);
    this.#limits = new DialLimits(options, {
      established: (b) => this.#t.established.get(b)?.size ?? 0,
      agentId: (b) => b.agentId,
      dialError: (text, kind, agentId) => this.#t.dialError(text, kind, agentId),
      now: () => this.#timers.now(),
    });
    const idleMs = options.tunnelIdleTimeoutMs ?? 0;
    this.#idle = idleMs > 0
      ? new IdleSweeper(idleMs, this.#timers, () => this.#t.frontends, (c, ms) => {
        closeIdleTunnel(this.#t, c, ms);
      })
      : undefined;
  }

  /** Number of dials waiting for an agent's answer. */
  get pendingDials(): number {
    return this.#t.pending.size;
  }

  /** Number of established end-to-end connections. */
  get establishedConnections(): number {
    return this.#t.establishedConnections;
  }

  /** Number of connected agent streams. */
  get backendStreams(): number {
    return this.#t.established.size - (this.#direct ? 1 : 0);
  }

  /** The open frontend connections (a read-only view: counts and gauges read it). */
  get frontends(): ReadonlySet<FrontendConnection> {
    return this.#t.frontends;
  }

  /** Ready iff the first strategy has an agent. */
  get ready(): boolean {
    return this.backends.ready;
  }

  // ---------------------------------------------------------------- agents

  /**
   * Validates an agent's metadata and returns the headers to send before any packet
   * (see {@linkcode validateAgentMetadata}; the links use `handshakeAgent`).
   *
   * @throws {KnpError} `HANDSHAKE` when the metadata breaks upstream's rules
   */
  agentHandshake(agentIds: string[], identifiers: string[]): AgentMetadata {
    return validateAgentMetadata(this, agentIds, identifiers);
  }

  /** Registers an agent stream (after its handshake) and starts serving it. */
  addBackend(
    agentId: string,
    identifiers: AgentIdentifiers,
    stream: PacketStream,
    flow?: FlowControl,
  ): Backend {
    stream = this.events.tap?.(stream, "agent") ?? stream;
    const backend = new Backend(agentId, identifiers, stream, flow);
    const log = this.#log.with({ agentID: agentId, peer: stream.peer });
    this.#t.established.set(backend, new Map());
    this.backends.add(backend);
    log.info("agent connected", { backend: backend.seq, flowControl: flow !== undefined });
    stream.start({
      onPacket: (packet) => fromBackend(this.#t, backend, packet),
      onEnd: (error) => {
        log.info("agent disconnected", { backend: backend.seq, error: error?.message });
        this.backends.remove(backend);
        backendGone(this.#t, backend);
      },
    });
    return backend;
  }

  // ------------------------------------------------------------- frontends

  /**
   * Serves one frontend stream (one tunnel, one dial). The returned connection's `ended`
   * resolves once the stream is over. `frontendKey` names the frontend connection the stream came
   * on (a gRPC stream's HTTP/2 session), for the per-frontend pending-dial limit.
   */
  serveFrontend(stream: PacketStream, userAgent = "", frontendKey?: unknown): FrontendConnection {
    stream = this.events.tap?.(stream, "frontend") ?? stream;
    const conn = new FrontendConnection(this.#idle?.wrap(stream) ?? stream, userAgent, this.#fe);
    this.#limits.bind(conn, frontendKey);
    this.#t.frontends.add(conn);
    this.#t.logTables("frontend connection started", { peer: stream.peer });
    conn.stream.start(conn);
    return conn;
  }

  #fromFrontend(conn: FrontendConnection, packet: DecodedPacket): void {
    switch (packet.type) {
      case "DIAL_REQ":
        return this.#dial(conn, packet);
      case "DATA":
        return this.#dataFromFrontend(conn, packet);
      case "CLOSE_REQ":
        return this.#closeRequest(conn, packet.closeRequest.connectId);
      case "DIAL_CLS": {
        if (conn.state !== "pending" || packet.closeDial.random !== conn.dialId) return;
        this.#t.emit({ kind: "dial-failure", reason: "frontend_close", dialId: conn.dialId });
        // Upstream agents ignore DIAL_CLS; ours cancel the dial. A late DIAL_RSP is closed anyway.
        conn.backend!.send(packet);
        return this.#t.teardown(conn);
      }
      default:
        this.#log.debug("ignored packet from frontend", { type: packet.type });
    }
  }

  #dataFromFrontend(conn: FrontendConnection, packet: Packet & { type: "DATA" }): void {
    const id = packet.data.connectId;
    if (conn.state === "idle") {
      conn.stream.send(closeResponse(id, "backend not initialized"));
      return this.#t.teardown(conn);
    }
    if (id === 0n || conn.state === "closing" || conn.state === "done") return;
    if (conn.state === "pending" || id !== conn.connectId) return this.#mismatch(conn, id);
    const backend = conn.backend!;
    if (!backend.send(packet)) {
      // The agent stream is full: hold this frontend only, until it drains.
      conn.hold("link");
      backend.stream.onDrain(() => conn.release("link"));
    }
    if (backend.flow) {
      conn.credit -= packet.data.data.byteLength;
      if (conn.credit <= 0) conn.hold("credit");
    }
  }

  #closeRequest(conn: FrontendConnection, id: bigint): void {
    if (conn.state === "idle") {
      conn.stream.send(closeResponse(id, "backend uninitialized"));
      return;
    }
    if (conn.state === "pending") {
      this.#t.emit({ kind: "dial-failure", reason: "frontend_close", dialId: conn.dialId });
      conn.backend!.send(closeDial(conn.dialId));
      conn.stream.send(closeResponse(id));
      return this.#t.teardown(conn);
    }
    if (conn.state !== "established") return;
    if (id !== conn.connectId) return this.#mismatch(conn, id);
    conn.backend!.send(closeRequest(id));
    conn.state = "closing";
    conn.setTimer(this.#timers, this.#closeTimeoutMs, () => {
      this.#log.warn("agent did not answer CLOSE_REQ in time", { connectID: id });
      conn.stream.send(closeResponse(id, "timed out waiting for the agent to close"));
      this.#t.teardown(conn);
    });
  }

  #dial(conn: FrontendConnection, packet: Packet & { type: "DIAL_REQ" }): void {
    const { random, address } = packet.dialRequest;
    if (conn.state !== "idle") {
      conn.stream.send(dialResponse(random, 0n, "this stream already carries a dial"));
      return;
    }
    const log = this.#log.with({ dialID: random, address, frontend: conn.stream.peer });
    this.#t.dialRequested(conn, random, address);
    traceDial(this.events, packet.dialRequest, conn.stream.peer);
    if (this.#t.pending.has(random)) {
      conn.stream.send(dialResponse(random, 0n, `dial ID ${random} is already in use`));
      return this.#t.teardown(conn);
    }
    const denied = destinationRefusal(this.destinationPolicy, conn, this.#t, log);
    if (denied !== undefined) {
      conn.stream.send(dialResponse(random, 0n, denied));
      return this.#t.teardown(conn);
    }
    let backend = this.#direct?.pick(address) ??
      this.backends.pickWithRoom(address, (b) => this.#limits.isFull(b));
    let refusal = backend ? this.#overloaded() : this.#noAgent(address);
    if (backend && refusal === undefined) {
      ({ backend, refusal } = this.#limits.check(conn, backend));
    }
    if (refusal !== undefined) {
      if (backend) this.#limits.warnRefused(log, refusal);
      else log.info("dial failed", { error: refusal });
      const reason = backend ? "backend_close" : "no_agent";
      this.#t.emit({ kind: "dial-failure", reason, dialId: random });
      conn.stream.send(dialResponse(random, 0n, refusal));
      return this.#t.teardown(conn);
    }
    conn.backend = backend;
    conn.state = "pending";
    conn.dialStart = this.#timers.now();
    this.#t.pending.set(random, conn);
    this.#limits.admitted(conn);
    backend!.opened();
    this.#t.dialRouted(conn, this.backends.lastPick);
    log.debug("forwarding DIAL_REQ", { agentID: backend!.agentId });
    backend!.send(forwardDial(this.events, packet, backend!.agentId));
    if (this.#dialTimeoutMs > 0) {
      conn.setTimer(this.#timers, this.#dialTimeoutMs, () => this.#dialTimedOut(conn, log));
    }
  }

  /** The refusal text when no agent can carry a dial to `address`. */
  #noAgent(address: string): string {
    // Upstream's exact text when no agent is connected at all.
    if (this.backendStreams === 0) return NO_AGENT_AVAILABLE;
    const strategies = this.backends.storages.map((s) => s.strategy).join(",");
    const text = `${NO_AGENT_AVAILABLE}: no agent serves ${JSON.stringify(address)}`;
    return this.#t.dialError(`${text} (proxy strategies: ${strategies})`, "no-route");
  }

  /** The refusal text when too many dials wait already; undefined when there is room. */
  #overloaded(): string | undefined {
    if (this.#t.pending.size < this.#maxPendingDials) return undefined;
    return this.#t.dialError(
      `server overloaded: ${this.#t.pending.size} dials are already waiting for agents (limit ${this.#maxPendingDials})`,
      "server-overloaded",
    );
  }

  #dialTimedOut(conn: FrontendConnection, log: Logger): void {
    const backend = conn.backend!;
    const random = conn.dialId;
    log.warn("dial timed out waiting for the agent", { agentID: backend.agentId });
    this.#t.emit({ kind: "dial-failure", reason: "backend_dial_timeout", dialId: random });
    backend.send(closeDial(random));
    const text = this.#t.dialError(DIAL_TIMEOUT_TEXT, "dial-timeout", backend.agentId);
    conn.stream.send(dialResponse(random, 0n, text));
    this.#t.teardown(conn);
  }

  #mismatch(conn: FrontendConnection, id: bigint): void {
    if (conn.backend) {
      conn.backend.send(closeRequest(id));
      if (conn.state === "established") conn.backend.send(closeRequest(conn.connectId));
      else conn.backend.send(closeDial(conn.dialId));
    }
    conn.stream.send(closeResponse(id, "mismatched connection IDs"));
    if (conn.connectId !== 0n) {
      conn.stream.send(closeResponse(conn.connectId, "mismatched connection IDs"));
    }
    this.#t.teardown(conn);
  }

  #frontendGone(conn: FrontendConnection): void {
    if (conn.state === "pending") {
      this.#t.emit({ kind: "dial-failure", reason: "frontend_close", dialId: conn.dialId });
      conn.backend?.send(closeDial(conn.dialId));
    } else if (conn.state === "established") {
      conn.backend?.send(closeRequest(conn.connectId));
    }
    this.#t.teardown(conn);
    this.#t.frontends.delete(conn);
    this.#limits.forget(conn);
    conn.backend?.closed();
    conn.markEnded();
  }

  /** Ends every stream (shutdown). */
  close(): void {
    this.#idle?.stop();
    for (const conn of [...this.#t.frontends]) {
      if (conn.state === "established") conn.backend?.send(closeRequest(conn.connectId));
      this.#t.teardown(conn, new KnpError("TUNNEL_CLOSED", "proxy server is shutting down"));
    }
    for (const backend of [...this.#t.established.keys()]) backend.stream.close();
  }
}
