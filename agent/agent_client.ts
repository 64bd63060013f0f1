/**
 * `AgentClient`: the agent's side of one server stream (`/AgentService/Connect`). It dials
 * endpoints on DIAL_REQ, assigns connectIDs, routes DATA and CLOSE_REQ to the right
 * {@linkcode EndpointConn}, and answers unknown IDs with upstream's error strings.
 *
 * The receive loop never awaits an endpoint: dials run concurrently, writes are queued per
 * connection.
 *
 * @module
 */

import {
  closeResponse,
  type DecodedPacket,
  type DialRequest,
  dialResponse,
  drain,
  type Packet,
} from "@knp/proto";
import { DEFAULT_GUARD_LIMITS, type GuardLimits, SharedPause } from "@knp/core/backpressure";
import { errorMessage, KnpError } from "@knp/core/errors";
import { childLogger, type Logger, nullLogger } from "@knp/core/log";
import { type DialSpan, startDialSpan } from "@knp/transport/dial_trace";
import { logPackets } from "@knp/transport/packet_log";
import type { PacketStream } from "@knp/transport/packet_stream";
import { realTimers, type Timers } from "@knp/core/timers";
import { type DialErrorKind, tagDialError } from "@knp/core/dial_errors";
import {
  classifyConnectError,
  DEFAULT_DIAL_TIMEOUT_MS,
  describeDialError,
  type Dialer,
} from "./dialer.ts";
import { EndpointConn } from "./endpoint_conn.ts";

/** Options of {@linkcode AgentClient}. */
export interface AgentClientOptions {
  /** The server stream to serve. */
  stream: PacketStream;
  /** The server's id, from its response headers. */
  serverId: string;
  /** Dials endpoints for the server's DIAL_REQs. */
  dialer: Dialer;
  /** Deadline of an endpoint dial. @default 5000 (upstream's constant) */
  dialTimeoutMs?: number;
  /** Per-connection buffering limits toward the server. */
  guard?: GuardLimits | undefined;
  /** Clock and timers (fake ones in tests). */
  timers?: Timers;
  /** Where the client logs. */
  logger?: Logger;
  /** Per-connection flow control negotiated for this stream (knp servers only). */
  flow?: { sendWindow: number; recvWindow: number } | undefined;
  /** Dial outcomes, for logs and metrics. */
  onDial?: (
    event: { ok: boolean; address: string; error?: string; ms: number; kind?: DialErrorKind },
  ) => void;
}

/** The agent's handler of one server stream. */
export class AgentClient {
  readonly serverId: string;
  readonly stream: PacketStream;
  #dialer: Dialer;
  #dialTimeoutMs: number;
  #guard: GuardLimits;
  #timers: Timers;
  #log: Logger;
  /** Categories `dialer` (endpoint dials) and `endpoint` (endpoint connections). */
  #dialLog: Logger;
  #endpointLog: Logger;
  #onDial: NonNullable<AgentClientOptions["onDial"]>;
  #shared: SharedPause;
  #nextConnectId = 0n;
  #conns = new Map<bigint, EndpointConn>();
  /** Every connection's `onClosed` (one closure, not one per connection). */
  readonly #connClosed = (c: EndpointConn): void => void this.#conns.delete(c.connectId);
  #dials = new Map<bigint, AbortController>();
  #ended = false;
  #refusal: string | undefined;
  #flow: AgentClientOptions["flow"];
  /** Resolves with the stream's end error (undefined when clean). */
  readonly done: Promise<Error | undefined>;
  #resolveDone: (error: Error | undefined) => void;

  constructor(options: AgentClientOptions) {
    this.serverId = options.serverId;
    this.#dialer = options.dialer;
    this.#dialTimeoutMs = options.dialTimeoutMs ?? DEFAULT_DIAL_TIMEOUT_MS;
    this.#guard = options.guard ?? DEFAULT_GUARD_LIMITS;
    this.#timers = options.timers ?? realTimers;
    this.#log = (options.logger ?? nullLogger).with({ serverID: options.serverId });
    this.#dialLog = childLogger(this.#log, "dialer");
    this.#endpointLog = childLogger(this.#log, "endpoint");
    // Per-packet trace records (klog -v=5 and above); the stream itself otherwise.
    this.stream = logPackets(options.stream, this.#log);
    this.#onDial = options.onDial ?? (() => {});
    this.#shared = new SharedPause(this.stream);
    this.#flow = options.flow;
    const { promise, resolve } = Promise.withResolvers<Error | undefined>();
    this.done = promise;
    this.#resolveDone = resolve;
  }

  /** Open endpoint connections. */
  get connections(): number {
    return this.#conns.size;
  }

  /** Dials in progress. */
  get pendingDials(): number {
    return this.#dials.size;
  }

  /** Starts serving packets from the server. */
  start(): void {
    this.stream.start({
      onPacket: (packet) => this.#onPacket(packet),
      onEnd: (error) => this.#onEnd(error),
    });
  }

  /** Tells the server this agent is shutting down (DRAIN). */
  drain(): void {
    this.stream.send(drain());
  }

  /**
   * Answers every later DIAL_REQ with `reason` instead of dialing (the agent is stopping);
   * open connections keep working.
   */
  refuseNewDials(reason: string): void {
    this.#refusal = reason;
  }

  /** Closes the stream and every connection on it. */
  close(): void {
    this.stream.close();
    this.#onEnd(undefined);
  }

  #send(packet: Packet): void {
    this.stream.send(packet);
  }

  #onPacket(packet: DecodedPacket): void {
    switch (packet.type) {
      case "DIAL_REQ":
        this.#dial(packet.dialRequest);
        return;
      case "DATA": {
        const id = packet.data.connectId;
        if (id === 0n) return;
        const conn = this.#conns.get(id);
        if (!conn) {
          this.#send(closeResponse(id, "unrecognized connectID"));
          return;
        }
        conn.write(packet.data.data);
        return;
      }
      case "CLOSE_REQ": {
        const id = packet.closeRequest.connectId;
        const conn = this.#conns.get(id);
        if (!conn) {
          this.#send(closeResponse(id, "Unknown connectID"));
          return;
        }
        conn.close({ by: "server" });
        return;
      }
      case "KNP_WINDOW":
        this.#conns.get(packet.knpWindow.connectId)?.addCredit(Number(packet.knpWindow.bytes));
        return;
      case "DIAL_CLS": {
        // knp extension: upstream agents ignore DIAL_CLS; we cancel the dial.
        this.#dials.get(packet.closeDial.random)?.abort();
        return;
      }
      default:
        this.#log.debug("unrecognized packet", { type: packet.type });
    }
  }

  /**
   * DIAL_RSP text of a failed dial. A knp server (one that negotiated flow control) is told the
   * failure's kind in the knp tag; upstream servers get the Go-style text alone, as before.
   */
  #dialErrorText(text: string, err: unknown): string {
    const kind = classifyConnectError(err);
    return this.#flow && kind !== "unknown" ? tagDialError(text, { kind }) : text;
  }

  /** The agent's dial span, the child of the server's (the DIAL_REQ's `traceparent`). */
  #span(request: DialRequest): DialSpan {
    return startDialSpan("knp.agent.dial", {
      parent: request.traceparent,
      kind: "client",
      attributes: {
        "knp.dial_id": request.random,
        "knp.address": request.address,
        "knp.server_id": this.serverId,
      },
    });
  }

  /** Answers a DIAL_REQ the agent does not dial (stopping, or its dial ID in use); true if so. */
  #refused(random: bigint, log: Logger, span: DialSpan): boolean {
    const refusal = this.#refusal ??
      (this.#dials.has(random) ? `dial ID ${random} is already being dialed` : undefined);
    if (refusal === undefined) return false;
    if (this.#refusal !== undefined) log.info("dial refused: agent is stopping");
    span.end(refusal);
    this.#send(dialResponse(random, 0n, refusal));
    return true;
  }

  async #dial(request: DialRequest): Promise<void> {
    const { protocol, address, random } = request;
    const log = this.#dialLog.with({ dialID: random, address });
    const span = this.#span(request);
    if (this.#refused(random, log, span)) return;
    const connectId = ++this.#nextConnectId;
    const abort = new AbortController();
    this.#dials.set(random, abort);
    const started = this.#timers.now();
    let socket;
    try {
      socket = await this.#dialer(protocol, address, {
        timeoutMs: this.#dialTimeoutMs,
        signal: abort.signal,
        serverId: this.serverId,
        dialId: random,
      });
    } catch (err) {
      this.#dials.delete(random);
      const error = err instanceof KnpError ? err.message : describeDialError(address, err);
      log.info("dial failed", { error });
      span.end(error);
      const ms = this.#timers.now() - started;
      this.#onDial({ ok: false, address, error, ms, kind: classifyConnectError(err) });
      if (!abort.signal.aborted && !this.#ended) {
        this.#send(dialResponse(random, 0n, this.#dialErrorText(error, err)));
      }
      return;
    }
    this.#dials.delete(random);
    if (abort.signal.aborted || this.#ended) {
      // Cancelled (DIAL_CLS) or the stream went away while dialing.
      span.end("cancelled");
      socket.close();
      return;
    }
    const conn = new EndpointConn({
      connectId,
      socket,
      stream: this.stream,
      shared: this.#shared,
      guard: this.#guard,
      timers: this.#timers,
      logger: this.#endpointLog,
      onClosed: this.#connClosed,
      flow: this.#flow,
    });
    this.#conns.set(connectId, conn);
    this.#onDial({ ok: true, address, ms: this.#timers.now() - started });
    log.debug("dial succeeded", { connectID: connectId });
    span.set({ "knp.connect_id": connectId });
    span.end();
    this.#send(dialResponse(random, connectId));
    conn.start();
  }

  #onEnd(error: Error | undefined): void {
    if (this.#ended) return;
    this.#ended = true;
    for (const abort of this.#dials.values()) abort.abort();
    for (const conn of [...this.#conns.values()]) conn.close({ by: "stream-gone" });
    if (error) this.#log.info("server stream ended", { error: errorMessage(error) });
    this.#resolveDone(error);
  }
}
