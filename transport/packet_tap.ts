/**
 * `tapPacketStream`: a {@linkcode PacketStream} that reports every packet sent and received, and
 * the error a stream ends with, to a {@linkcode PacketTap} — what the metrics of the server and
 * the agent count (upstream's `stream_packets_total{segment,packet_type}` and
 * `stream_errors_total{segment,code,packet_type}`). It adds nothing on the wire.
 *
 * ```ts
 * import { dataPacket } from "@knp/proto";
 * import { memoryPipe } from "@knp/transport/packet_stream";
 *
 * const [a, b] = memoryPipe();
 * let sent = 0;
 * const tapped = tapPacketStream(a, { sent: () => sent++, received: () => {}, ended: () => {} });
 * b.start({ onPacket: () => {}, onEnd: () => {} });
 * tapped.send(dataPacket(1n, new Uint8Array([1])));
 * console.log(sent); // 1
 * ```
 *
 * @module
 */

import { type DecodedPacket, type Packet, payloadBytes } from "@knp/proto";
import type { PacketHandler, PacketStream } from "./packet_stream.ts";

/** What a tapped stream reports. Must not throw and must not block. */
export interface PacketTap {
  /** A packet handed to `send` (counted even when the stream drops it as closed). */
  sent(type: string, bytes: number): void;
  /** A packet delivered by the stream. */
  received(type: string, bytes: number): void;
  /** The stream ended; `error` is undefined for a clean end. */
  ended(error: Error | undefined): void;
  /**
   * When set: a sent packet was taken by the transport (its `onSent`), `ms` after `send`. Packets
   * a transport drops, or sends without an `onSent` (HTTP-CONNECT's DIAL_RSP), are not reported.
   */
  written?(ms: number): void;
}

/** gRPC status names by number (upstream labels stream errors with these). */
const GRPC_CODES = [
  "OK",
  "Canceled",
  "Unknown",
  "InvalidArgument",
  "DeadlineExceeded",
  "NotFound",
  "AlreadyExists",
  "PermissionDenied",
  "ResourceExhausted",
  "FailedPrecondition",
  "Aborted",
  "OutOfRange",
  "Unimplemented",
  "Internal",
  "Unavailable",
  "DataLoss",
  "Unauthenticated",
];

/**
 * The gRPC status name of a stream error: its numeric `code` (grpc-js errors, or a `cause`'s),
 * else `Unknown`.
 */
export function grpcCodeName(error: unknown): string {
  for (let e = error, depth = 0; typeof e === "object" && e !== null && depth < 4; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "number") return GRPC_CODES[code] ?? "Unknown";
    e = (e as { cause?: unknown }).cause;
  }
  return "Unknown";
}

/**
 * What {@linkcode observePackets} reports. Each hook must not throw and must not block; every
 * hook is optional.
 */
export interface PacketObserver {
  /** A packet the stream delivers, before its handler sees it. */
  received?(packet: DecodedPacket): void;
  /** The same packet, after its handler took it. */
  delivered?(packet: DecodedPacket): void;
  /**
   * A packet handed to `send`; returns the `onSent` callback to pass on (the given one, or one
   * wrapping it).
   */
  sent?(packet: Packet, onSent: (() => void) | undefined): (() => void) | undefined;
  /** The stream ended; `error` is undefined for a clean end. */
  ended?(error: Error | undefined): void;
}

/**
 * Wraps `stream` so that `observer` sees its packets and its end; every other member is the
 * stream's own. The one wrapper behind the packet tap (metrics), the packet log and the dial
 * explainer.
 */
export function observePackets(stream: PacketStream, observer: PacketObserver): PacketStream {
  return new ObservedStream(stream, observer);
}

/**
 * The wrapper of {@linkcode observePackets}, a class rather than an object literal: every
 * frontend stream of a server is wrapped (twice with metrics and the dial explainer), and an
 * object literal of ten closures and getters costs about 1.5 KB per idle connection where the
 * class's instance costs a few dozen bytes. It is its inner stream's handler too.
 */
class ObservedStream implements PacketStream, PacketHandler {
  readonly #stream: PacketStream;
  readonly #observer: PacketObserver;
  #handler: PacketHandler | undefined;

  constructor(stream: PacketStream, observer: PacketObserver) {
    this.#stream = stream;
    this.#observer = observer;
  }

  start(handler: PacketHandler): void {
    this.#handler = handler;
    this.#stream.start(this);
  }

  /** The inner stream's packet: the observer sees it before and after the handler. */
  onPacket(packet: DecodedPacket): void {
    this.#observer.received?.(packet);
    this.#handler!.onPacket(packet);
    this.#observer.delivered?.(packet);
  }

  /** The inner stream's end: the observer sees it before the handler. */
  onEnd(error?: Error): void {
    this.#observer.ended?.(error);
    this.#handler!.onEnd(error);
  }

  send(packet: Packet, onSent?: () => void): boolean {
    const sent = this.#observer.sent;
    return this.#stream.send(packet, sent ? sent.call(this.#observer, packet, onSent) : onSent);
  }

  get bufferedBytes(): number {
    return this.#stream.bufferedBytes;
  }

  onDrain(callback: () => void): void {
    this.#stream.onDrain(callback);
  }

  pause(): void {
    this.#stream.pause();
  }

  resume(): void {
    this.#stream.resume();
  }

  close(error?: Error): void {
    this.#stream.close(error);
  }

  get closed(): boolean {
    return this.#stream.closed;
  }

  get done(): Promise<Error | undefined> {
    return this.#stream.done;
  }

  get peer(): string {
    return this.#stream.peer;
  }
}

/** Wraps `stream` so that `tap` sees its packets; every other member is the stream's own. */
export function tapPacketStream(stream: PacketStream, tap: PacketTap): PacketStream {
  return observePackets(stream, new TapObserver(tap));
}

/** A {@linkcode PacketTap} as a {@linkcode PacketObserver} (a class: one small object a stream). */
class TapObserver implements PacketObserver {
  readonly #tap: PacketTap;

  constructor(tap: PacketTap) {
    this.#tap = tap;
  }

  received(packet: DecodedPacket): void {
    this.#tap.received(packet.type, payloadBytes(packet));
  }

  sent(packet: Packet, onSent: (() => void) | undefined): (() => void) | undefined {
    const tap = this.#tap;
    tap.sent(packet.type, payloadBytes(packet));
    if (tap.written === undefined) return onSent;
    const start = performance.now();
    return () => {
      tap.written?.(performance.now() - start);
      onSent?.();
    };
  }

  ended(error: Error | undefined): void {
    this.#tap.ended(error);
  }
}
