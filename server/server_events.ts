/**
 * The core's typed event channel: {@linkcode ServerEvents} is a listener set for the
 * {@linkcode ServerEvent} union. Metrics and logs subscribe; the core emits.
 *
 * ```ts
 * import { nullLogger } from "@knp/core/log";
 *
 * const events = new ServerEvents(nullLogger); // the core's `events`
 * const off = events.on((event) => {
 *   if (event.kind === "dial-failure") console.log(event.reason);
 * });
 * off();
 * ```
 *
 * @module
 */

import type { Logger } from "@knp/core/log";
import type { PacketStream } from "@knp/transport/packet_stream";

/** Why a dial failed, as counted by upstream's `dial_failure_count{reason}`. */
export type DialFailureLabel =
  | "no_agent"
  | "error_response"
  | "unrecognized_response"
  | "send_rsp"
  | "backend_close"
  | "backend_dial_timeout"
  | "frontend_close";

/** Why an agent was refused at its handshake. */
export type AgentRefusalReason =
  | "unauthenticated"
  | "permission_denied"
  | "throttled"
  | "handshake";

/** What the core reports, for logs and metrics. */
export type ServerEvent =
  | {
    kind: "agent-refused";
    reason: AgentRefusalReason;
    link: string;
    agentId?: string | undefined;
    peer: string;
  }
  | { kind: "dial-failure"; reason: DialFailureLabel; dialId: bigint; agentId?: string }
  | { kind: "dial-success"; dialId: bigint; connectId: bigint; agentId: string; ms: number }
  | {
    kind: "connection-closed";
    connectId: bigint;
    agentId: string;
    /**
     * Why: the frontend asked (`close_request`), the frontend went away (`frontend_gone`), the
     * agent closed it or went away (`agent_close`), or the server ended it (`server_error`: a
     * frontend that stopped reading, shutdown).
     */
    reason?: "close_request" | "frontend_gone" | "agent_close" | "server_error";
  }
  | { kind: "dial-denied"; dialId: bigint; address: string; rule: string; source: string }
  | { kind: "dial-requested"; dialId: bigint; address: string; peer: string; userAgent: string }
  | {
    kind: "dial-routed";
    dialId: bigint;
    agentId: string;
    /** The proxy strategy that chose (`direct` for the server's own direct route). */
    strategy: string;
    /** The destination's zone (`--knp-zone-cidrs`), when known. */
    zone: string | undefined;
    /** The agent's open connections before this dial. */
    load: number;
  };

/** A listener of {@linkcode ServerEvents}. */
export type ServerEventListener = (event: ServerEvent) => void;

/** A typed listener set; a failing listener is logged and does not stop the others. */
export class ServerEvents {
  readonly #listeners = new Set<ServerEventListener>();
  /** Wraps each new frontend and agent stream of the core (the metrics count their packets). */
  tap: ((stream: PacketStream, side: "frontend" | "agent") => PacketStream) | undefined;
  readonly #log: Logger;

  /** Listeners that throw are reported to `log`. */
  constructor(log: Logger) {
    this.#log = log;
  }

  /** Subscribes `listener`; returns the function that unsubscribes it. */
  on(listener: ServerEventListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Delivers `event` to every listener, in subscription order. */
  emit(event: ServerEvent): void {
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch (err) {
        this.#log.warn("event listener failed", { error: String(err) });
      }
    }
  }
}
