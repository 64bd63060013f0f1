/**
 * `ProxyServer`: the server's protocol core. It owns the dial table (pending dials by dial ID), the
 * connection table (established connections by agent stream and connectID) and one
 * {@linkcode FrontendConnection} state machine per frontend stream. It does no I/O of its own: it
 * is handed {@linkcode PacketStream}s for frontends and agents, and time through `timers`.
 *
 * Every table entry has a deadline: pending dials `backendDialTimeoutMs`, closing connections
 * `closeTimeoutMs`. Every connection leaves the tables through one path, `#teardown`.
 *
 * @module
 */

import {
  closeDial,
  closeRequest,
  closeResponse,
  type DecodedPacket,
  dialResponse,
  knpWindow,
  type Packet,
} from "@knp/proto";
import { parseAgentIdentifiers, queryParseError } from "@knp/proto";
import { DEFAULT_GUARD_LIMITS, type GuardLimits, SinkGuard } from "@knp/core/backpressure";
import { KnpError } from "@knp/core/errors";
import { type DialErrorKind, tagDialError } from "@knp/core/dial_errors";
import { type Logger, nullLogger } from "@knp/core/log";
import type { PacketStream } from "@knp/transport/packet_stream";
import { realTimers, type Timers } from "@knp/core/timers";
import { Backend, type FlowControl } from "./backend.ts";
import { BackendManager, type ProxyStrategy } from "./backend_manager.ts";

/** Error text of a dial with no agent to carry it (upstream's exact string). */
export const NO_AGENT_AVAILABLE = "No agent available";
/** Error text of a dial whose agent did not answer in time (upstream's exact string). */
export const DIAL_TIMEOUT_TEXT = "timed out waiting for backend dial";

/** Why a dial failed, as counted by upstream's `dial_failure_count{reason}`. */
export type DialFailureLabel =
  | "no_agent"
  | "error_response"
  | "unrecognized_response"
  | "send_rsp"
  | "backend_close"
  | "backend_dial_timeout"
  | "frontend_close";

/** What the core reports, for logs and metrics. */
export type ServerEvent =
  | { kind: "dial-failure"; reason: DialFailureLabel; dialId: bigint; agentId?: string }
  | { kind: "dial-success"; dialId: bigint; connectId: bigint; agentId: string; ms: number }
  | { kind: "connection-closed"; connectId: bigint; agentId: string };

/** Options of {@linkcode ProxyServer}. */
export interface ProxyServerOptions {
  serverId: string;
  /** Sent to agents as `servercount`. @default 1 */
  serverCount?: number;
  /** @default ["default"] */
  strategies?: ProxyStrategy[];
  /** Deadline for an agent's DIAL_RSP; 0 disables. @default 10000 */
  backendDialTimeoutMs?: number;
  /** Deadline for an agent's CLOSE_RSP after a CLOSE_REQ. @default 10000 */
  closeTimeoutMs?: number;
  /** Most dials that may wait for agents at once; more are refused as overloaded. @default 10000 */
  maxPendingDials?: number;
  /** Per-connection buffering limits toward frontends. */
  guard?: GuardLimits;
  timers?: Timers;
  logger?: Logger;
  onEvent?: (event: ServerEvent) => void;
  random?: () => number;
}

type State = "idle" | "pending" | "established" | "closing" | "done";

/** One frontend stream and the single connection it carries. */
export class FrontendConnection {
  readonly stream: PacketStream;
  readonly userAgent: string;
  state: State = "idle";
  dialId = 0n;
  address = "";
  connectId = 0n;
  backend: Backend | undefined;
  dialStart = 0;
  timer: number | undefined;
  guard: SinkGuard | undefined;
  /** Flow control (negotiated agents only): bytes we may still send the agent. */
  credit = 0;
  /** Flow control: bytes from the agent passed on to the frontend but not yet granted back. */
  ungranted = 0;
  /** Why reading this frontend is paused: the agent stream is full, or no credit is left. */
  readonly holds = new Set<"link" | "credit">();

  constructor(stream: PacketStream, userAgent: string) {
    this.stream = stream;
    this.userAgent = userAgent;
  }
}

/** The server's protocol core. */
export class ProxyServer {
  readonly serverId: string;
  readonly serverCount: number;
  readonly backends: BackendManager;
  #dialTimeoutMs: number;
  #closeTimeoutMs: number;
  #maxPendingDials: number;
  #guard: GuardLimits;
  #timers: Timers;
  #log: Logger;
  #onEvent: (event: ServerEvent) => void;
  #pending = new Map<bigint, FrontendConnection>();
  #established = new Map<Backend, Map<bigint, FrontendConnection>>();
  #frontends = new Set<FrontendConnection>();

  constructor(options: ProxyServerOptions) {
    this.serverId = options.serverId;
    this.serverCount = options.serverCount ?? 1;
    this.backends = new BackendManager(options.strategies ?? ["default"], options.random);
    this.#dialTimeoutMs = options.backendDialTimeoutMs ?? 10_000;
    this.#closeTimeoutMs = options.closeTimeoutMs ?? 10_000;
    this.#maxPendingDials = options.maxPendingDials ?? 10_000;
    this.#guard = options.guard ?? DEFAULT_GUARD_LIMITS;
    this.#timers = options.timers ?? realTimers;
    this.#log = (options.logger ?? nullLogger).with({ serverID: options.serverId });
    this.#onEvent = options.onEvent ?? (() => {});
  }

  /** Number of dials waiting for an agent's answer. */
  get pendingDials(): number {
    return this.#pending.size;
  }

  /** Number of established end-to-end connections. */
  get establishedConnections(): number {
    let n = 0;
    for (const m of this.#established.values()) n += m.size;
    return n;
  }

  /** Number of connected agent streams. */
  get backendStreams(): number {
    return this.#established.size;
  }

  /** Number of open frontend streams. */
  get frontendStreams(): number {
    return this.#frontends.size;
  }

  /** Ready iff the first strategy has an agent. */
  get ready(): boolean {
    return this.backends.ready;
  }

  // ---------------------------------------------------------------- agents

  /**
   * Validates an agent's metadata and returns the headers to send before any packet.
   *
   * @throws {KnpError} `HANDSHAKE` when the metadata breaks upstream's rules
   */
  agentHandshake(agentIds: string[], identifiers: string[]): {
    agentId: string;
    identifiers: ReturnType<typeof parseAgentIdentifiers>;
    headers: Record<string, string>;
  } {
    if (agentIds.length !== 1) {
      throw new KnpError(
        "HANDSHAKE",
        `expected one agent ID in the context, got [${agentIds.join(" ")}]`,
      );
    }
    if (identifiers.length > 1) {
      throw new KnpError(
        "HANDSHAKE",
        `expected at most one set of agent identifiers in the context, got [${
          identifiers.join(" ")
        }]`,
      );
    }
    const parseError = queryParseError(identifiers[0] ?? "");
    if (parseError !== undefined) {
      throw new KnpError("HANDSHAKE", `fail to parse url encoded string: ${parseError}`);
    }
    return {
      agentId: agentIds[0]!,
      identifiers: parseAgentIdentifiers(identifiers[0] ?? ""),
      headers: { serverid: this.serverId, servercount: String(this.serverCount) },
    };
  }

  /** Registers an agent stream (after its handshake) and starts serving it. */
  addBackend(
    agentId: string,
    identifiers: ReturnType<typeof parseAgentIdentifiers>,
    stream: PacketStream,
    flow?: FlowControl,
  ): Backend {
    const backend = new Backend(agentId, identifiers, stream, flow);
    const log = this.#log.with({ agentID: agentId, peer: stream.peer });
    this.#established.set(backend, new Map());
    this.backends.add(backend);
    log.info("agent connected", { backend: backend.seq, flowControl: flow !== undefined });
    stream.start({
      onPacket: (packet) => this.#fromBackend(backend, packet),
      onEnd: (error) => {
        log.info("agent disconnected", { backend: backend.seq, error: error?.message });
        this.#removeBackend(backend);
      },
    });
    return backend;
  }

  #removeBackend(backend: Backend): void {
    this.backends.remove(backend);
    const conns = this.#established.get(backend);
    this.#established.delete(backend);
    for (const conn of conns?.values() ?? []) {
      conn.stream.send(closeResponse(conn.connectId, `agent ${backend.agentId} disconnected`));
      this.#teardown(conn);
    }
    for (const conn of [...this.#pending.values()]) {
      if (conn.backend !== backend) continue;
      this.#event({ kind: "dial-failure", reason: "backend_close", dialId: conn.dialId });
      conn.stream.send(
        dialResponse(
          conn.dialId,
          0n,
          this.#dialError(
            `agent ${backend.agentId} disconnected before the dial completed`,
            "tunnel-closed",
            backend.agentId,
          ),
        ),
      );
      this.#teardown(conn);
    }
  }

  #fromBackend(backend: Backend, packet: DecodedPacket): void {
    switch (packet.type) {
      case "DIAL_RSP": {
        const { random, connectId, error } = packet.dialResponse;
        const conn = this.#pending.get(random);
        if (!conn || conn.backend !== backend) {
          this.#log.debug("DIAL_RSP not recognized; dropped", {
            dialID: random,
            connectID: connectId,
          });
          this.#event({ kind: "dial-failure", reason: "unrecognized_response", dialId: random });
          if (connectId !== 0n) backend.send(closeRequest(connectId));
          return;
        }
        this.#pending.delete(random);
        this.#clearTimer(conn);
        if (error !== "") {
          this.#event({ kind: "dial-failure", reason: "error_response", dialId: random });
          conn.stream.send(
            dialResponse(random, connectId, this.#dialError(error, undefined, backend.agentId)),
          );
          this.#teardown(conn);
          return;
        }
        if (conn.stream.closed) {
          this.#event({ kind: "dial-failure", reason: "send_rsp", dialId: random });
          backend.send(closeRequest(connectId));
          this.#teardown(conn);
          return;
        }
        conn.connectId = connectId;
        conn.state = "established";
        if (backend.flow) {
          // The agent sends at most `recvWindow` unacknowledged bytes: nothing to pause for.
          conn.credit = backend.flow.sendWindow;
          conn.guard = new SinkGuard(conn.stream, backend.pause, {
            stallMs: 0,
            maxBytes: Math.max(this.#guard.maxBytes, 2 * backend.flow.recvWindow),
          }, this.#timers);
        } else {
          conn.guard = new SinkGuard(conn.stream, backend.pause, this.#guard, this.#timers);
        }
        this.#established.get(backend)?.set(connectId, conn);
        conn.stream.send(packet);
        this.#event({
          kind: "dial-success",
          dialId: random,
          connectId,
          agentId: backend.agentId,
          ms: this.#timers.now() - conn.dialStart,
        });
        return;
      }
      case "DATA": {
        const id = packet.data.connectId;
        if (id === 0n) return;
        const conn = this.#established.get(backend)?.get(id);
        if (!conn) {
          backend.send(closeRequest(id));
          return;
        }
        if (conn.state !== "established" && conn.state !== "closing") return;
        const size = packet.data.data.byteLength;
        const underMark = backend.flow
          ? conn.stream.send(packet, () => this.#grant(conn, backend, size))
          : conn.stream.send(packet);
        if (conn.guard?.afterSend(underMark) === "overflow") {
          this.#log.warn("frontend is not reading; connection reset alone", {
            connectID: id,
            agentID: backend.agentId,
            bufferedBytes: conn.stream.bufferedBytes,
          });
          backend.send(closeRequest(id));
          this.#teardown(
            conn,
            new KnpError("BUFFER_OVERFLOW", "frontend stopped reading; connection reset"),
          );
        }
        return;
      }
      case "CLOSE_RSP": {
        const conn = this.#established.get(backend)?.get(packet.closeResponse.connectId);
        if (!conn) return;
        conn.stream.send(packet);
        this.#teardown(conn);
        return;
      }
      case "DIAL_CLS": {
        const conn = this.#pending.get(packet.closeDial.random);
        if (!conn || conn.backend !== backend) return;
        this.#event({ kind: "dial-failure", reason: "backend_close", dialId: conn.dialId });
        conn.stream.send(packet);
        this.#teardown(conn);
        return;
      }
      case "KNP_WINDOW": {
        const conn = this.#established.get(backend)?.get(packet.knpWindow.connectId);
        if (!conn || !backend.flow) return;
        conn.credit += Number(packet.knpWindow.bytes);
        if (conn.credit > 0) this.#release(conn, "credit");
        return;
      }
      case "DRAIN":
        this.#log.info("agent is draining", { agentID: backend.agentId });
        backend.setDraining();
        return;
      default:
        this.#log.debug("ignored packet from agent", { type: packet.type });
    }
  }

  // ------------------------------------------------------------- frontends

  /** Serves one frontend stream (one tunnel, one dial). */
  serveFrontend(stream: PacketStream, userAgent = ""): FrontendConnection {
    const conn = new FrontendConnection(stream, userAgent);
    this.#frontends.add(conn);
    stream.start({
      onPacket: (packet) => this.#fromFrontend(conn, packet),
      onEnd: () => this.#frontendGone(conn),
    });
    return conn;
  }

  #fromFrontend(conn: FrontendConnection, packet: DecodedPacket): void {
    switch (packet.type) {
      case "DIAL_REQ":
        return this.#dial(conn, packet);
      case "DATA": {
        const id = packet.data.connectId;
        if (conn.state === "idle") {
          conn.stream.send(closeResponse(id, "backend not initialized"));
          return this.#teardown(conn);
        }
        if (id === 0n || conn.state === "closing" || conn.state === "done") return;
        if (conn.state === "pending" || id !== conn.connectId) return this.#mismatch(conn, id);
        const backend = conn.backend!;
        if (!backend.send(packet)) {
          // The agent stream is full: hold this frontend only, until it drains.
          this.#hold(conn, "link");
          backend.stream.onDrain(() => this.#release(conn, "link"));
        }
        if (backend.flow) {
          conn.credit -= packet.data.data.byteLength;
          if (conn.credit <= 0) this.#hold(conn, "credit");
        }
        return;
      }
      case "CLOSE_REQ": {
        const id = packet.closeRequest.connectId;
        if (conn.state === "idle") {
          conn.stream.send(closeResponse(id, "backend uninitialized"));
          return;
        }
        if (conn.state === "pending") {
          this.#event({ kind: "dial-failure", reason: "frontend_close", dialId: conn.dialId });
          conn.backend!.send(closeDial(conn.dialId));
          conn.stream.send(closeResponse(id));
          return this.#teardown(conn);
        }
        if (conn.state !== "established") return;
        if (id !== conn.connectId) return this.#mismatch(conn, id);
        conn.backend!.send(closeRequest(id));
        conn.state = "closing";
        this.#setTimer(conn, this.#closeTimeoutMs, () => {
          this.#log.warn("agent did not answer CLOSE_REQ in time", { connectID: id });
          conn.stream.send(closeResponse(id, "timed out waiting for the agent to close"));
          this.#teardown(conn);
        });
        return;
      }
      case "DIAL_CLS": {
        if (conn.state !== "pending" || packet.closeDial.random !== conn.dialId) return;
        this.#event({ kind: "dial-failure", reason: "frontend_close", dialId: conn.dialId });
        // Upstream agents ignore DIAL_CLS; ours cancel the dial. A late DIAL_RSP is closed anyway.
        conn.backend!.send(packet);
        return this.#teardown(conn);
      }
      default:
        this.#log.debug("ignored packet from frontend", { type: packet.type });
    }
  }

  #dial(conn: FrontendConnection, packet: Packet & { type: "DIAL_REQ" }): void {
    const { random, address } = packet.dialRequest;
    if (conn.state !== "idle") {
      conn.stream.send(dialResponse(random, 0n, "this stream already carries a dial"));
      return;
    }
    const log = this.#log.with({ dialID: random, address });
    conn.dialId = random;
    conn.address = address;
    if (this.#pending.has(random)) {
      conn.stream.send(dialResponse(random, 0n, `dial ID ${random} is already in use`));
      return this.#teardown(conn);
    }
    const backend = this.backends.pick(address);
    if (!backend) {
      this.#event({ kind: "dial-failure", reason: "no_agent", dialId: random });
      let text = NO_AGENT_AVAILABLE; // upstream's exact text when no agent is connected at all
      if (this.#established.size > 0) {
        const strategies = this.backends.storages.map((s) => s.strategy).join(",");
        text = this.#dialError(
          `${NO_AGENT_AVAILABLE}: no agent serves ${
            JSON.stringify(address)
          } (proxy strategies: ${strategies})`,
          "no-route",
        );
      }
      log.info("dial failed", { error: text });
      conn.stream.send(dialResponse(random, 0n, text));
      return this.#teardown(conn);
    }
    if (this.#pending.size >= this.#maxPendingDials) {
      const text = this.#dialError(
        `server overloaded: ${this.#pending.size} dials are already waiting for agents (limit ${this.#maxPendingDials})`,
        "server-overloaded",
      );
      log.warn("dial refused", { error: text });
      this.#event({ kind: "dial-failure", reason: "backend_close", dialId: random });
      conn.stream.send(dialResponse(random, 0n, text));
      return this.#teardown(conn);
    }
    conn.backend = backend;
    conn.state = "pending";
    conn.dialStart = this.#timers.now();
    this.#pending.set(random, conn);
    log.debug("forwarding DIAL_REQ", { agentID: backend.agentId });
    backend.send(packet);
    if (this.#dialTimeoutMs > 0) {
      this.#setTimer(conn, this.#dialTimeoutMs, () => {
        log.warn("dial timed out waiting for the agent", { agentID: backend.agentId });
        this.#event({ kind: "dial-failure", reason: "backend_dial_timeout", dialId: random });
        backend.send(closeDial(random));
        conn.stream.send(
          dialResponse(
            random,
            0n,
            this.#dialError(DIAL_TIMEOUT_TEXT, "dial-timeout", backend.agentId),
          ),
        );
        this.#teardown(conn);
      });
    }
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
    this.#teardown(conn);
  }

  #frontendGone(conn: FrontendConnection): void {
    if (conn.state === "pending") {
      this.#event({ kind: "dial-failure", reason: "frontend_close", dialId: conn.dialId });
      conn.backend?.send(closeDial(conn.dialId));
    } else if (conn.state === "established") {
      conn.backend?.send(closeRequest(conn.connectId));
    }
    this.#teardown(conn);
    this.#frontends.delete(conn);
  }

  /** The single exit from every table. Closing the stream ends the frontend's tunnel. */
  #teardown(conn: FrontendConnection, error?: Error): void {
    if (conn.state === "done" && !this.#frontends.has(conn)) return;
    const was = conn.state;
    conn.state = "done";
    this.#clearTimer(conn);
    conn.guard?.dispose();
    conn.guard = undefined;
    if (this.#pending.get(conn.dialId) === conn) this.#pending.delete(conn.dialId);
    if (conn.backend && (was === "established" || was === "closing")) {
      const table = this.#established.get(conn.backend);
      if (table?.get(conn.connectId) === conn) table.delete(conn.connectId);
      this.#event({
        kind: "connection-closed",
        connectId: conn.connectId,
        agentId: conn.backend.agentId,
      });
    }
    this.#frontends.delete(conn);
    conn.stream.close(error);
  }

  #setTimer(conn: FrontendConnection, ms: number, fire: () => void): void {
    this.#clearTimer(conn);
    conn.timer = this.#timers.setTimeout(() => {
      conn.timer = undefined;
      fire();
    }, ms);
  }

  #clearTimer(conn: FrontendConnection): void {
    if (conn.timer !== undefined) this.#timers.clearTimeout(conn.timer);
    conn.timer = undefined;
  }

  /** Pauses reading a frontend for one reason; it resumes when no reason is left. */
  #hold(conn: FrontendConnection, why: "link" | "credit"): void {
    if (conn.holds.size === 0) conn.stream.pause();
    conn.holds.add(why);
  }

  #release(conn: FrontendConnection, why: "link" | "credit"): void {
    if (!conn.holds.delete(why) || conn.holds.size > 0) return;
    if (conn.state === "established") conn.stream.resume();
  }

  /** Flow control: `bytes` from the agent reached the frontend; grant them back in batches. */
  #grant(conn: FrontendConnection, backend: Backend, bytes: number): void {
    if (conn.state !== "established" || !backend.flow) return;
    conn.ungranted += bytes;
    if (conn.ungranted >= backend.flow.recvWindow / 4) {
      backend.send(knpWindow(conn.connectId, conn.ungranted));
      conn.ungranted = 0;
    }
  }

  /** Error text for a frontend: upstream's wording plus the knp tag (kind, server, agent). */
  #dialError(text: string, kind?: DialErrorKind, agentId?: string): string {
    return tagDialError(text, { kind, serverId: this.serverId, agentId });
  }

  #event(event: ServerEvent): void {
    try {
      this.#onEvent(event);
    } catch (err) {
      this.#log.error("event listener failed", { error: String(err) });
    }
  }

  /** Ends every stream (shutdown). */
  close(): void {
    for (const conn of [...this.#frontends]) {
      if (conn.state === "established") conn.backend?.send(closeRequest(conn.connectId));
      this.#teardown(conn, new KnpError("TUNNEL_CLOSED", "proxy server is shutting down"));
    }
    for (const backend of [...this.#established.keys()]) backend.stream.close();
  }
}
