/**
 * `PacketStream`: the one seam between the protocol state machines and a transport.
 *
 * A stream delivers decoded packets to a handler by push (never awaiting the handler) and accepts
 * packets to send without blocking. Send-side backpressure is counted in bytes: `send()` returns
 * `false` once `bufferedBytes` passes the high-water mark and `onDrain` fires when it falls back.
 * Receive-side backpressure is `pause()`/`resume()`, which the transport turns into its own flow
 * control (HTTP/2 windows for gRPC).
 *
 * The end is observable three ways: `onEnd` (push), the `closed` flag, and the `done` promise.
 * Transports that can go silent without ending (a dead peer behind a live TCP connection) take
 * {@linkcode KeepaliveOptions}: they probe the peer and end the stream with a `TIMEOUT`
 * `KnpError` when it stays silent.
 *
 * Implementations: `grpc_stream.ts` (grpc-js), `ws_stream.ts` (WebSocket link) and
 * `memoryPipe()` below for tests.
 *
 * @module
 */

import type { DecodedPacket, Packet } from "@knp/proto";
import { payloadBytes } from "@knp/proto";

/** Receives what a stream delivers. */
export interface PacketHandler {
  /** One received packet. Must not throw; must not block. */
  onPacket(packet: DecodedPacket): void;
  /** Called exactly once when the stream is over: cleanly (no error) or not. */
  onEnd(error?: Error): void;
}

/** A bidirectional packet stream. */
export interface PacketStream {
  /** Starts delivering received packets to `handler`. Call once. */
  start(handler: PacketHandler): void;
  /**
   * Queues a packet for sending and never blocks. Returns `false` when the stream's buffered bytes
   * exceed its high-water mark (the packet is still queued) or the stream is closed (dropped).
   * `onSent` runs once the transport has taken the packet (flow control grants credit then); it
   * does not run for a dropped packet.
   */
  send(packet: Packet, onSent?: () => void): boolean;
  /** Payload bytes queued but not yet handed to the transport. */
  readonly bufferedBytes: number;
  /** Calls `callback` once, when `bufferedBytes` falls to the low-water mark (at once if it is). */
  onDrain(callback: () => void): void;
  /** Stops delivering packets until `resume()`; the transport applies its own backpressure. */
  pause(): void;
  /** Resumes delivery after `pause()`. */
  resume(): void;
  /**
   * Ends the stream. Without an error: a clean end after what was queued is sent. With one: an
   * abort that the peer sees as that error. Idempotent; `onEnd` follows.
   */
  close(error?: Error): void;
  /** True once `close()` was called or the stream ended. */
  readonly closed: boolean;
  /**
   * Settles once the stream has ended (when `onEnd` is due, whether or not `start()` was called):
   * with the error it ended with, or `undefined` for a clean end. Never rejects.
   */
  readonly done: Promise<Error | undefined>;
  /** Short description for logs (peer address). */
  readonly peer: string;
}

/**
 * Keepalive of a stream's transport: every `intervalMs` the stream pings the peer (where the
 * transport can), and it ends with a `TIMEOUT` `KnpError` when nothing at all (an answer to a
 * ping or any other frame) arrives within `timeoutMs` of a ping.
 */
export interface KeepaliveOptions {
  /** Time between pings, in ms (gRPC's keepalive time). */
  intervalMs: number;
  /** How long a ping may go unanswered, in ms (gRPC's keepalive timeout). */
  timeoutMs: number;
}

/** The `done` promise of a stream and the one call that settles it. */
export class DoneSignal {
  /** Resolves once with the error that ended the stream, or undefined for a clean end. */
  readonly promise: Promise<Error | undefined>;
  #resolve: (error: Error | undefined) => void = () => {};

  constructor() {
    this.promise = new Promise((resolve) => {
      this.#resolve = resolve;
    });
  }

  /** Settles the promise (only the first call counts). */
  settle(error?: Error): void {
    this.#resolve(error);
  }
}

/** Default high-water mark of a stream's send queue, in payload bytes. */
export const DEFAULT_STREAM_HIGH_WATER = 1 << 20;

/**
 * Byte accounting shared by stream implementations: counts queued payload bytes and runs drain
 * callbacks when the count falls to the low-water mark.
 */
export class SendAccounting {
  #buffered = 0;
  #waiters: (() => void)[] = [];
  /** Queued bytes above which senders should wait. */
  readonly highWater: number;
  /** Queued bytes at which drain callbacks run (half the high-water mark). */
  readonly lowWater: number;

  /** Accounting with the given high-water mark, in bytes. */
  constructor(highWater = DEFAULT_STREAM_HIGH_WATER) {
    this.highWater = highWater;
    this.lowWater = highWater >> 1;
  }

  /** Bytes queued and not yet written. */
  get buffered(): number {
    return this.#buffered;
  }

  /** Records `bytes` queued; returns whether the queue is still under the high-water mark. */
  add(bytes: number): boolean {
    this.#buffered += bytes;
    return this.#buffered <= this.highWater;
  }

  /** Records `bytes` written out; fires drain callbacks at the low-water mark. */
  remove(bytes: number): void {
    this.#buffered -= bytes;
    if (this.#buffered <= this.lowWater && this.#waiters.length > 0) this.flush();
  }

  /** Runs `callback` once the queue is at or below the low-water mark. */
  onDrain(callback: () => void): void {
    if (this.#buffered <= this.lowWater) queueMicrotask(callback);
    else this.#waiters.push(callback);
  }

  /** Runs every waiting callback (also used at close so nobody waits forever). */
  flush(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }
}

/** Options of {@linkcode memoryPipe}. */
export interface MemoryPipeOptions {
  /** Queued bytes above which `send` reports backpressure. */
  highWater?: number | undefined;
}

/**
 * Two linked in-memory streams, for tests of the state machines: what one side sends the other
 * receives, asynchronously and in order. Packets are delivered as objects (no encoding).
 */
export function memoryPipe(options: MemoryPipeOptions = {}): [PacketStream, PacketStream] {
  const a = new MemoryEnd("memory:a", options.highWater);
  const b = new MemoryEnd("memory:b", options.highWater);
  a.other = b;
  b.other = a;
  return [a, b];
}

class MemoryEnd implements PacketStream {
  other!: MemoryEnd;
  readonly peer: string;
  #handler: PacketHandler | undefined;
  #inbox: DecodedPacket[] = [];
  #paused = false;
  #closed = false;
  #ended = false;
  #endError: Error | undefined;
  #peerEnded = false;
  #scheduled = false;
  #acct: SendAccounting;
  #done = new DoneSignal();

  constructor(peer: string, highWater?: number) {
    this.peer = peer;
    this.#acct = new SendAccounting(highWater);
  }

  get bufferedBytes(): number {
    return this.#acct.buffered;
  }
  get closed(): boolean {
    return this.#closed || this.#ended;
  }

  get done(): Promise<Error | undefined> {
    return this.#done.promise;
  }

  start(handler: PacketHandler): void {
    this.#handler = handler;
    if (this.#ended) queueMicrotask(() => handler.onEnd(this.#endError));
    else this.#schedule();
  }

  send(packet: Packet, onSent?: () => void): boolean {
    if (this.closed) return false;
    const bytes = payloadBytes(packet);
    const ok = this.#acct.add(bytes);
    this.other.#deliver(packet, () => {
      this.#acct.remove(bytes);
      onSent?.();
    });
    return ok;
  }

  onDrain(callback: () => void): void {
    this.#acct.onDrain(callback);
  }

  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    this.#paused = false;
    this.#schedule();
  }

  close(error?: Error): void {
    if (this.closed) return;
    this.#closed = true;
    this.other.#peerClosed(error);
    this.#finish(error);
  }

  #consumed: (() => void)[] = [];

  #deliver(packet: DecodedPacket, consumed: () => void): void {
    if (this.#ended) return consumed();
    this.#inbox.push(packet);
    this.#consumed.push(consumed);
    this.#schedule();
  }

  #peerClosed(error?: Error): void {
    this.#peerEnded = true;
    this.#endError = error;
    this.#schedule();
  }

  #schedule(): void {
    if (this.#scheduled || !this.#handler) return;
    this.#scheduled = true;
    queueMicrotask(() => {
      this.#scheduled = false;
      this.#pump();
    });
  }

  #pump(): void {
    const handler = this.#handler;
    if (!handler || this.#ended) return;
    while (!this.#paused && this.#inbox.length > 0) {
      const packet = this.#inbox.shift()!;
      this.#consumed.shift()!();
      handler.onPacket(packet);
      if (this.#ended) return;
    }
    if (this.#peerEnded && this.#inbox.length === 0) this.#finish(this.#endError);
  }

  #finish(error?: Error): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#endError = error;
    this.#closed = true;
    for (const c of this.#consumed) c();
    this.#consumed = [];
    this.#inbox = [];
    this.#acct.flush();
    this.#done.settle(error);
    this.#handler?.onEnd(error);
  }
}
