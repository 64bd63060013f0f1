/**
 * Backpressure between one shared stream (all connections of an agent) and per-connection sinks.
 *
 * Policy, without per-connection credit from the peer:
 * - A connection whose sink is above its high-water mark *holds* the shared source paused while it
 *   keeps draining, so a slow-but-moving reader gets backpressure instead of a reset.
 * - If it does not drain within `stallMs`, it stops holding the source (the others move on) and
 *   its buffer may grow up to `maxBytes`; past that the connection alone is reset.
 *
 * A stalled reader therefore costs other connections at most `stallMs` once, never the tunnel.
 *
 * @module
 */

import type { Timers } from "./timers.ts";

/** Something that can stop and restart delivering. */
export interface Pausable {
  /** Stops delivering. */
  pause(): void;
  /** Delivers again. */
  resume(): void;
}

/** Pauses a shared source while at least one holder asks for it. */
export class SharedPause {
  #source: Pausable;
  #holders = new Set<object>();

  /** Pauses and resumes `source`. */
  constructor(source: Pausable) {
    this.#source = source;
  }

  /** Number of connections currently holding the source paused. */
  get holders(): number {
    return this.#holders.size;
  }

  /** `key` asks for the source to stay paused (pauses it if it is the first holder). */
  hold(key: object): void {
    if (this.#holders.has(key)) return;
    this.#holders.add(key);
    if (this.#holders.size === 1) this.#source.pause();
  }

  /** `key` no longer holds the source (resumes it once no holder is left). */
  release(key: object): void {
    if (!this.#holders.delete(key)) return;
    if (this.#holders.size === 0) this.#source.resume();
  }
}

/** A per-connection sink with byte accounting. */
export interface GuardedSink {
  /** Bytes waiting in the sink. */
  readonly bufferedBytes: number;
  /** Registers `callback` to run whenever the sink drains below its mark. */
  onDrain(callback: () => void): void;
}

/** Limits of a {@linkcode SinkGuard}. */
export interface GuardLimits {
  /** How long a connection may hold the shared source without draining. */
  stallMs: number;
  /** Buffered bytes past which the connection is reset. */
  maxBytes: number;
}

/** Default limits: 2 s of grace, 16 MiB per connection. */
export const DEFAULT_GUARD_LIMITS: GuardLimits = { stallMs: 2_000, maxBytes: 16 << 20 };

/** Applies the policy above to one connection's sink. */
export class SinkGuard {
  #sink: GuardedSink;
  #shared: SharedPause;
  #limits: GuardLimits;
  #timers: Timers;
  #holding = false;
  #stalled = false;
  #timer: number | undefined;
  #disposed = false;

  /** Guards `sink`, holding `shared` while the sink is full, within `limits`. */
  constructor(sink: GuardedSink, shared: SharedPause, limits: GuardLimits, timers: Timers) {
    this.#sink = sink;
    this.#shared = shared;
    this.#limits = limits;
    this.#timers = timers;
  }

  /** True while the connection is over its mark without draining in time. */
  get stalled(): boolean {
    return this.#stalled;
  }

  /**
   * Call after each send into the sink, with whether the sink accepted it under its mark.
   * Returns `"overflow"` when the connection must be reset.
   */
  afterSend(underMark: boolean): "ok" | "overflow" {
    if (this.#disposed) return "ok";
    if (this.#sink.bufferedBytes > this.#limits.maxBytes) return "overflow";
    // stallMs 0: never hold the shared source (the peer's own window bounds this sink).
    if (underMark || this.#holding || this.#stalled || this.#limits.stallMs <= 0) return "ok";
    this.#holding = true;
    this.#shared.hold(this);
    this.#timer = this.#timers.setTimeout(() => {
      this.#timer = undefined;
      this.#stalled = true;
      this.#letGo();
    }, this.#limits.stallMs);
    this.#sink.onDrain(() => {
      if (this.#disposed) return;
      this.#stalled = false;
      this.#letGo();
    });
    return "ok";
  }

  #letGo(): void {
    if (this.#timer !== undefined) this.#timers.clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#holding) {
      this.#holding = false;
      this.#shared.release(this);
    }
  }

  /** Releases the shared source for good (the connection is over). */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#letGo();
  }
}
