/**
 * The server's dial spans (`knp.server.dial`, see `@knp/transport/dial_trace`): one per
 * frontend DIAL_REQ, the child of the `traceparent` the dial arrived with (the client's span, or
 * an HTTP-CONNECT request's `traceparent` header). The DIAL_REQ forwarded to the agent names the
 * server's span as the agent's parent. The span ends on the core's own events: `dial-success`,
 * `dial-failure` (no agent, overloaded, timeout, agent error, cancelled) or `dial-denied`.
 *
 * No-ops unless OpenTelemetry is on in the process (`OTEL_DENO=true`); then the DIAL_REQ goes
 * to the agent as it came, an incoming `traceparent` included.
 *
 * ```ts
 * import { dialRequest } from "@knp/proto";
 * import { nullLogger } from "@knp/core/log";
 * import { ServerEvents } from "./server_events.ts";
 *
 * const events = new ServerEvents(nullLogger);
 * const packet = dialRequest("10.0.0.7:443", 42n) as ReturnType<typeof dialRequest> & {
 *   type: "DIAL_REQ";
 * };
 * traceDial(events, packet.dialRequest, "uds");
 * const forwarded = forwardDial(events, packet, "agent-1"); // with the server span's traceparent
 * events.emit({ kind: "dial-failure", reason: "backend_dial_timeout", dialId: 42n }); // ends it
 * ```
 *
 * @module
 */

import type { DialRequest, Packet } from "@knp/proto";
import type { Logger } from "@knp/core/log";
import { logPackets } from "@knp/transport/packet_log";
import { type DialSpan, startDialSpan } from "@knp/transport/dial_trace";
import type { ServerEvent, ServerEvents } from "./server_events.ts";

/** The recorded spans of dials still in flight, per core (by its event channel). */
const inFlight = new WeakMap<ServerEvents, Map<bigint, DialSpan>>();

function spansOf(events: ServerEvents): Map<bigint, DialSpan> {
  let spans = inFlight.get(events);
  if (spans === undefined) {
    const created = new Map<bigint, DialSpan>();
    events.on((event) => endOn(created, event));
    inFlight.set(events, spans = created);
  }
  return spans;
}

function endOn(spans: Map<bigint, DialSpan>, event: ServerEvent): void {
  if (
    event.kind !== "dial-success" && event.kind !== "dial-failure" && event.kind !== "dial-denied"
  ) {
    return;
  }
  const span = spans.get(event.dialId);
  if (span === undefined) return;
  spans.delete(event.dialId);
  if (event.kind === "dial-success") {
    span.set({ "knp.connect_id": event.connectId, "knp.agent_id": event.agentId });
    span.end();
  } else if (event.kind === "dial-denied") {
    span.end(`denied by ${event.source} rule ${event.rule}`);
  } else span.end(event.reason);
}

/**
 * Starts the span of a frontend's DIAL_REQ (once per dial ID: a duplicate ID is refused by the
 * core and keeps the first dial's span). Recorded spans are kept until the dial's outcome event.
 */
export function traceDial(events: ServerEvents, request: DialRequest, peer: string): void {
  const spans = spansOf(events);
  if (spans.has(request.random)) return;
  const span = startDialSpan("knp.server.dial", {
    parent: request.traceparent,
    kind: "server",
    attributes: { "knp.dial_id": request.random, "knp.address": request.address, "knp.peer": peer },
  });
  if (span.recording) spans.set(request.random, span);
  else span.end();
}

/**
 * The DIAL_REQ to send to agent `agentId`: the frontend's, with the server span's `traceparent`
 * when the dial is traced; the frontend's packet itself otherwise.
 */
export function forwardDial(
  events: ServerEvents,
  packet: Packet & { type: "DIAL_REQ" },
  agentId: string,
): Packet {
  const span = inFlight.get(events)?.get(packet.dialRequest.random);
  if (span === undefined || span.traceparent === undefined) return packet;
  span.set({ "knp.agent_id": agentId });
  return {
    type: "DIAL_REQ",
    dialRequest: { ...packet.dialRequest, traceparent: span.traceparent },
  };
}

/**
 * Logs every packet of the core's frontend and agent streams at trace level (klog `-v=5` and
 * above), composed with the tap already installed (the metrics'). Does nothing when `log` does
 * not trace.
 */
export function logCorePackets(events: ServerEvents, log: Logger): void {
  if (log.trace === undefined) return;
  const inner = events.tap;
  events.tap = (stream, side) => logPackets(inner?.(stream, side) ?? stream, log.with({ side }));
}
