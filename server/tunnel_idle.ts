/**
 * The tunnel idle timeout (`--knp-tunnel-idle-timeout`, off by default): an established tunnel
 * that carried no DATA either way for the timeout is closed both ways by the core.
 *
 * {@linkcode ActivityStream} wraps a frontend's packet stream and notes when DATA last passed it
 * (both directions pass the frontend's stream); {@linkcode IdleSweeper} looks at every open
 * frontend a few times per timeout, so an idle tunnel closes between one timeout and a quarter
 * more after its last DATA.
 *
 * @module
 */

import { closeRequest, closeResponse, type DecodedPacket, type Packet } from "@knp/proto";
import type { Timers } from "@knp/core/timers";
import type { PacketHandler, PacketStream } from "@knp/transport/packet_stream";
import type { ConnectionTables } from "./connection_tables.ts";
import type { FrontendConnection } from "./frontend_connection.ts";

/** A frontend packet stream that remembers when DATA last went through it, either way. */
export class ActivityStream implements PacketStream {
  /** The wrapped stream. */
  readonly inner: PacketStream;
  /** When DATA last passed (`now()` ms); the creation time until then. */
  lastActivity: number;
  readonly #now: () => number;

  /** Wraps `inner`, reading time from `now`. */
  constructor(inner: PacketStream, now: () => number) {
    this.inner = inner;
    this.#now = now;
    this.lastActivity = now();
  }

  start(handler: PacketHandler): void {
    this.inner.start({
      onPacket: (packet: DecodedPacket) => {
        if (packet.type === "DATA") this.lastActivity = this.#now();
        handler.onPacket(packet);
      },
      onEnd: (error) => handler.onEnd(error),
    });
  }

  send(packet: Packet, onSent?: () => void): boolean {
    if (packet.type === "DATA") this.lastActivity = this.#now();
    return this.inner.send(packet, onSent);
  }

  get bufferedBytes(): number {
    return this.inner.bufferedBytes;
  }

  onDrain(callback: () => void): void {
    this.inner.onDrain(callback);
  }

  pause(): void {
    this.inner.pause();
  }

  resume(): void {
    this.inner.resume();
  }

  close(error?: Error): void {
    this.inner.close(error);
  }

  get closed(): boolean {
    return this.inner.closed;
  }

  get done(): Promise<Error | undefined> {
    return this.inner.done;
  }

  get peer(): string {
    return this.inner.peer;
  }
}

/** What {@linkcode IdleSweeper} reads of a frontend connection. */
export interface IdleCandidate {
  /** Only `established` tunnels time out. */
  readonly state: string;
  /** The frontend's stream (an {@linkcode ActivityStream} when the sweeper wrapped it). */
  readonly stream: PacketStream;
}

/** Closes established tunnels that carried no DATA for `timeoutMs`. */
export class IdleSweeper<C extends IdleCandidate> {
  /** The idle timeout, ms. */
  readonly timeoutMs: number;
  readonly #timers: Timers;
  readonly #conns: () => Iterable<C>;
  readonly #close: (conn: C, idleMs: number) => void;
  #timer: number | undefined;
  #stopped = false;

  /**
   * Sweeps `conns()` every quarter of `timeoutMs` (at least every second; at most every minute),
   * calling `close(conn, idleMs)` for each established tunnel idle for `timeoutMs` or more.
   */
  constructor(
    timeoutMs: number,
    timers: Timers,
    conns: () => Iterable<C>,
    close: (conn: C, idleMs: number) => void,
  ) {
    this.timeoutMs = timeoutMs;
    this.#timers = timers;
    this.#conns = conns;
    this.#close = close;
    this.#schedule();
  }

  /** Wraps a new frontend's stream so its DATA is noticed. */
  wrap(stream: PacketStream): ActivityStream {
    return new ActivityStream(stream, () => this.#timers.now());
  }

  #schedule(): void {
    if (this.#stopped) return;
    const every = Math.min(60_000, Math.max(1_000, Math.floor(this.timeoutMs / 4)));
    this.#timer = this.#timers.setTimeout(() => {
      this.#timer = undefined;
      this.sweep();
      this.#schedule();
    }, every);
  }

  /** Closes every established tunnel idle for the timeout or more (run by the timer). */
  sweep(): void {
    const now = this.#timers.now();
    const idle: [C, number][] = [];
    for (const conn of this.#conns()) {
      if (conn.state !== "established" || !(conn.stream instanceof ActivityStream)) continue;
      const idleMs = now - conn.stream.lastActivity;
      if (idleMs >= this.timeoutMs) idle.push([conn, idleMs]);
    }
    for (const [conn, idleMs] of idle) this.#close(conn, idleMs);
  }

  /** Stops sweeping (shutdown). */
  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) this.#timers.clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

/**
 * Closes an idle established tunnel both ways: CLOSE_REQ to the agent, CLOSE_RSP with the reason
 * to the frontend, then out of the tables; one INFO line names it.
 */
export function closeIdleTunnel(
  t: ConnectionTables,
  conn: FrontendConnection,
  idleMs: number,
): void {
  if (conn.state !== "established") return;
  t.log.info("closing idle tunnel", {
    connectID: conn.connectId,
    dialID: conn.dialId,
    agentID: conn.backend?.agentId,
    idleMs,
  });
  conn.backend?.send(closeRequest(conn.connectId));
  conn.stream.send(closeResponse(conn.connectId, `tunnel idle for ${idleMs} ms; closed`));
  t.teardown(conn);
}
