/**
 * The core's agent side: what each packet from an agent stream does to the tables, and what an
 * agent stream's end does to the connections it carried.
 *
 * @module
 */

import {
  closeRequest,
  closeResponse,
  type DecodedPacket,
  dialResponse,
  type Packet,
} from "@knp/proto";
import { KnpError } from "@knp/core/errors";
import { parseDialError } from "@knp/core/dial_errors";
import type { Backend } from "./backend.ts";
import type { ConnectionTables } from "./connection_tables.ts";

/** Handles one packet from `backend`'s stream. */
export function fromBackend(t: ConnectionTables, backend: Backend, packet: DecodedPacket): void {
  switch (packet.type) {
    case "DIAL_RSP":
      return onDialResponse(t, backend, packet);
    case "DATA":
      return onData(t, backend, packet);
    case "CLOSE_RSP": {
      const conn = t.established.get(backend)?.get(packet.closeResponse.connectId);
      if (!conn) return;
      conn.stream.send(packet);
      return t.teardown(conn);
    }
    case "DIAL_CLS": {
      const conn = t.pending.get(packet.closeDial.random);
      if (!conn || conn.backend !== backend) return;
      t.dialFailed("backend_close", conn.dialId);
      conn.stream.send(packet);
      return t.teardown(conn);
    }
    case "KNP_WINDOW": {
      const conn = t.established.get(backend)?.get(packet.knpWindow.connectId);
      if (!conn || !backend.flow) return;
      conn.credit += Number(packet.knpWindow.bytes);
      if (conn.credit > 0) conn.release("credit");
      return;
    }
    case "DRAIN":
      t.log.info("agent is draining", { agentID: backend.agentId });
      return backend.setDraining();
    default:
      t.log.debug("ignored packet from agent", { type: packet.type });
  }
}

function onDialResponse(
  t: ConnectionTables,
  backend: Backend,
  packet: Packet & { type: "DIAL_RSP" },
): void {
  const { random, connectId, error } = packet.dialResponse;
  const conn = t.pending.get(random);
  if (!conn || conn.backend !== backend) {
    t.log.debug("DIAL_RSP not recognized; dropped", { dialID: random, connectID: connectId });
    t.dialFailed("unrecognized_response", random);
    if (connectId !== 0n) backend.send(closeRequest(connectId));
    return;
  }
  t.pending.delete(random);
  conn.clearTimer(t.timers);
  if (error !== "") {
    t.dialFailed("error_response", random);
    // A knp agent states the kind in its tag; an upstream agent's text is classified.
    const { message, kind } = parseDialError(error);
    conn.stream.send(dialResponse(random, connectId, t.dialError(message, kind, backend.agentId)));
    return t.teardown(conn);
  }
  if (conn.stream.closed) {
    t.dialFailed("send_rsp", random);
    backend.send(closeRequest(connectId));
    return t.teardown(conn);
  }
  t.establish(conn, backend, connectId);
  conn.stream.send(packet);
  const ms = t.timers.now() - conn.dialStart;
  t.emit({ kind: "dial-success", dialId: random, connectId, agentId: backend.agentId, ms });
}

function onData(t: ConnectionTables, backend: Backend, packet: Packet & { type: "DATA" }): void {
  const id = packet.data.connectId;
  if (id === 0n) return;
  const conn = t.established.get(backend)?.get(id);
  if (!conn) {
    backend.send(closeRequest(id));
    return;
  }
  if (conn.state !== "established" && conn.state !== "closing") return;
  const size = packet.data.data.byteLength;
  const underMark = backend.flow
    ? conn.stream.send(packet, () => t.grant(conn, backend, size))
    : conn.stream.send(packet);
  if (conn.guard?.afterSend(underMark) !== "overflow") return;
  t.log.warn("frontend is not reading; connection reset alone", {
    connectID: id,
    agentID: backend.agentId,
    bufferedBytes: conn.stream.bufferedBytes,
  });
  backend.send(closeRequest(id));
  t.teardown(conn, new KnpError("BUFFER_OVERFLOW", "frontend stopped reading; connection reset"));
}

/** An agent stream ended: its connections close and its pending dials fail. */
export function backendGone(t: ConnectionTables, backend: Backend): void {
  const conns = t.established.get(backend);
  t.established.delete(backend);
  for (const conn of conns?.values() ?? []) {
    conn.stream.send(closeResponse(conn.connectId, `agent ${backend.agentId} disconnected`));
    t.teardown(conn);
  }
  for (const conn of [...t.pending.values()]) {
    if (conn.backend !== backend) continue;
    t.dialFailed("backend_close", conn.dialId);
    const text = t.dialError(
      `agent ${backend.agentId} disconnected before the dial completed`,
      "tunnel-closed",
      backend.agentId,
    );
    conn.stream.send(dialResponse(conn.dialId, 0n, text));
    t.teardown(conn);
  }
}
