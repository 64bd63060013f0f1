/**
 * Direct dials: destinations the server dials itself instead of through an agent
 * (`--knp-direct-destinations`), for endpoints the server can reach and that should not go
 * through the tunnel.
 *
 * The "direct backend" looks like one more agent to the connection tables: a {@linkcode Backend}
 * whose packet stream is one end of an in-memory pipe, and whose other end is served here by a
 * small in-process agent ({@linkcode DirectAgent}) that dials with `Deno.connect`. Both frontends
 * (gRPC and HTTP-CONNECT), the dial timeout, DIAL_CLS, CLOSE_REQ and backpressure work unchanged.
 * It is not registered with the proxy strategies: only a dial whose destination matches a rule
 * goes to it, and such a dial never goes to an agent. The destination policy is checked first,
 * as for every dial.
 *
 * @module
 */

import {
  closeResponse,
  dataPacket,
  type DecodedPacket,
  dialResponse,
  parseAgentIdentifiers,
} from "@knp/proto";
import { classifyDialError, tagDialError } from "@knp/core/dial_errors";
import { type DestinationRule, parseDialAddress, ruleMatches } from "@knp/core/destination_policy";
import { type Logger, nullLogger } from "@knp/core/log";
import { memoryPipe, type PacketStream } from "@knp/transport/packet_stream";
import { Backend } from "./backend.ts";
import { backendGone, fromBackend } from "./agent_packets.ts";
import type { ConnectionTables } from "./connection_tables.ts";

/** The agent ID the direct backend carries in logs, metrics and error tags. */
export const DIRECT_AGENT_ID = "direct";

/** Which destinations the server dials itself, and the stream of its in-process agent. */
export interface DirectRoute {
  /** Destinations dialed directly. */
  readonly rules: readonly DestinationRule[];
  /** The core's end of the pipe to the in-process agent. */
  readonly stream: PacketStream;
}

/** The core's option (`ProxyServerOptions` extends it). */
export interface DirectRouteOptions {
  /** Destinations the server dials itself, never through an agent. */
  direct?: DirectRoute | undefined;
}

/** Whether `address` is one of `rules`' destinations. */
export function isDirectDestination(rules: readonly DestinationRule[], address: string): boolean {
  const target = parseDialAddress(address);
  return target !== undefined && rules.some((rule) => ruleMatches(rule, target));
}

/**
 * Registers the direct backend with the tables (not with the strategies) and starts serving its
 * stream; `pick` returns it for the direct destinations.
 */
export function attachDirectRoute(
  t: ConnectionTables,
  route: DirectRoute,
): { backend: Backend; pick(address: string): Backend | undefined } {
  const backend = new Backend(DIRECT_AGENT_ID, parseAgentIdentifiers(""), route.stream);
  t.established.set(backend, new Map());
  route.stream.start({
    onPacket: (packet) => fromBackend(t, backend, packet),
    onEnd: () => backendGone(t, backend),
  });
  return {
    backend,
    pick: (address) => isDirectDestination(route.rules, address) ? backend : undefined,
  };
}

/** Opens a TCP connection (`Deno.connect` in production). */
export type DirectConnect = (
  target: { hostname: string; port: number; signal: AbortSignal },
) => Promise<Deno.TcpConn>;

const denoConnect: DirectConnect = ({ hostname, port, signal }) =>
  Deno.connect({ hostname, port, signal });

/**
 * A route for `rules` with its in-process agent started (dials through `connect`).
 *
 * @param log Direct dials are logged at debug with their dialID.
 */
export function directRoute(
  rules: readonly DestinationRule[],
  log: Logger = nullLogger,
  connect: DirectConnect = denoConnect,
): DirectRoute {
  const [core, agent] = memoryPipe();
  new DirectAgent(agent, log.with({ agentID: DIRECT_AGENT_ID }), connect);
  return { rules, stream: core };
}

/** Go-style text and taxonomy tag of a failed direct dial. */
function dialFailure(address: string, host: string, err: unknown): string {
  let text: string;
  if (err instanceof Deno.errors.ConnectionRefused) {
    text = `dial tcp ${address}: connect: connection refused`;
  } else if (err instanceof Deno.errors.TimedOut) text = `dial tcp ${address}: i/o timeout`;
  else {
    const message = err instanceof Error ? err.message : String(err);
    text = /lookup address|Name or service not known|No address associated/i.test(message)
      ? `dial tcp: lookup ${host}: no such host`
      : `dial tcp ${address}: ${message}`;
  }
  return tagDialError(text, { kind: classifyDialError(text), agentId: DIRECT_AGENT_ID });
}

const READ_BYTES = 32 * 1024;
/** Bytes queued for destination sockets above which the pipe stops delivering. */
const WRITE_HIGH = 1 << 20;

/** The in-process agent: serves DIAL_REQ, DATA, CLOSE_REQ and DIAL_CLS with real sockets. */
class DirectAgent {
  readonly #stream: PacketStream;
  readonly #log: Logger;
  readonly #connect: DirectConnect;
  readonly #dials = new Map<bigint, AbortController>();
  readonly #conns = new Map<bigint, { socket: Deno.TcpConn; writing: Promise<void> }>();
  #nextId = 1n;
  #queued = 0;

  constructor(stream: PacketStream, log: Logger, connect: DirectConnect) {
    this.#stream = stream;
    this.#log = log;
    this.#connect = connect;
    stream.start({ onPacket: (p) => this.#onPacket(p), onEnd: () => this.#closeAll() });
  }

  #onPacket(packet: DecodedPacket): void {
    switch (packet.type) {
      case "DIAL_REQ":
        return void this.#dial(packet.dialRequest.random, packet.dialRequest.address);
      case "DATA":
        return this.#write(packet.data.connectId, packet.data.data);
      case "CLOSE_REQ": {
        const id = packet.closeRequest.connectId;
        this.#forget(id);
        this.#stream.send(closeResponse(id));
        return;
      }
      case "DIAL_CLS":
        return this.#dials.get(packet.closeDial.random)?.abort();
    }
  }

  async #dial(random: bigint, address: string): Promise<void> {
    const log = this.#log.with({ dialID: random, address });
    log.debug("direct dial: the server dials the destination itself");
    const target = parseDialAddress(address);
    if (target === undefined) {
      const text = tagDialError(`dial tcp: address ${address}: invalid address`, {
        kind: "unknown",
        agentId: DIRECT_AGENT_ID,
      });
      this.#stream.send(dialResponse(random, 0n, text));
      return;
    }
    const abort = new AbortController();
    this.#dials.set(random, abort);
    try {
      const socket = await this.#connect({
        hostname: target.host,
        port: target.port,
        signal: abort.signal,
      });
      if (abort.signal.aborted || this.#stream.closed) return socket.close();
      socket.setNoDelay(true);
      const id = this.#nextId++;
      this.#conns.set(id, { socket, writing: Promise.resolve() });
      log.debug("direct dial connected", { connectID: id });
      this.#stream.send(dialResponse(random, id));
      void this.#readLoop(id, socket);
    } catch (err) {
      if (abort.signal.aborted) return;
      log.debug("direct dial failed", { error: err instanceof Error ? err.message : String(err) });
      this.#stream.send(dialResponse(random, 0n, dialFailure(address, target.host, err)));
    } finally {
      this.#dials.delete(random);
    }
  }

  /** Destination → core; waits for the pipe to drain when it is full. */
  async #readLoop(id: bigint, socket: Deno.TcpConn): Promise<void> {
    const buffer = new Uint8Array(READ_BYTES);
    try {
      for (;;) {
        const n = await socket.read(buffer);
        if (n === null || !this.#conns.has(id)) break;
        if (!this.#stream.send(dataPacket(id, buffer.slice(0, n)))) {
          await new Promise<void>((resolve) => this.#stream.onDrain(resolve));
        }
      }
    } catch { /* closed: reported below */ }
    if (!this.#conns.has(id)) return;
    this.#forget(id);
    this.#stream.send(closeResponse(id));
  }

  /** Core → destination, in order; the pipe pauses while too much waits for sockets. */
  #write(id: bigint, data: Uint8Array): void {
    const conn = this.#conns.get(id);
    if (conn === undefined) {
      if (id !== 0n) this.#stream.send(closeResponse(id, "unknown connection"));
      return;
    }
    this.#queued += data.byteLength;
    if (this.#queued > WRITE_HIGH) this.#stream.pause();
    conn.writing = conn.writing.then(async () => {
      try {
        for (let off = 0; off < data.length;) off += await conn.socket.write(data.subarray(off));
      } catch {
        // The read loop notices the broken socket and reports the close.
        try {
          conn.socket.close();
        } catch { /* closed */ }
      } finally {
        this.#queued -= data.byteLength;
        if (this.#queued <= WRITE_HIGH / 2) this.#stream.resume();
      }
    });
  }

  #forget(id: bigint): void {
    const conn = this.#conns.get(id);
    if (conn === undefined) return;
    this.#conns.delete(id);
    try {
      conn.socket.close();
    } catch { /* closed */ }
  }

  #closeAll(): void {
    for (const abort of this.#dials.values()) abort.abort();
    for (const id of [...this.#conns.keys()]) this.#forget(id);
  }
}
