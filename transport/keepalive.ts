/**
 * {@linkcode Keepalive}: the clock side of {@linkcode KeepaliveOptions} for a transport that pings
 * by itself (the WebSocket link). It asks for a ping every `intervalMs` and reports the peer dead
 * when nothing arrived within `timeoutMs` of a ping. Time comes from an injected
 * {@linkcode Timers}, so tests drive it with a fake clock.
 *
 * @module
 */

import { KnpError } from "@knp/core/errors";
import { realTimers, type Timers } from "@knp/core/timers";
import type { KeepaliveOptions } from "./packet_stream.ts";

/** What a {@linkcode Keepalive} drives. */
export interface KeepaliveHooks {
  /** Sends a ping to the peer (may do nothing when the transport cannot ping). */
  ping(): void;
  /** The peer stayed silent: end the stream with `error` (a `TIMEOUT` `KnpError`). */
  expired(error: KnpError): void;
}

/** Pings a peer at an interval and detects when it goes silent. */
export class Keepalive {
  readonly #options: KeepaliveOptions;
  readonly #timers: Timers;
  readonly #hooks: KeepaliveHooks;
  readonly #peer: string;
  #tick: number | undefined;
  #deadline: number | undefined;
  #stopped = false;

  /**
   * Watches `peer` with `options`; `hooks` sends the pings and ends the link.
   * @throws {RangeError} unless both times are positive finite numbers
   */
  constructor(
    peer: string,
    options: KeepaliveOptions,
    hooks: KeepaliveHooks,
    timers: Timers = realTimers,
  ) {
    for (const [name, value] of Object.entries(options)) {
      if (!(Number.isFinite(value) && value > 0)) {
        throw new RangeError(`keepalive ${name} must be a positive number of ms, not ${value}`);
      }
    }
    this.#peer = peer;
    this.#options = options;
    this.#hooks = hooks;
    this.#timers = timers;
  }

  /** Starts the interval; the first ping goes out `intervalMs` from now. */
  start(): void {
    if (this.#stopped || this.#tick !== undefined) return;
    this.#schedule();
  }

  /** Something (a pong or any other frame) arrived from the peer. */
  alive(): void {
    if (this.#deadline === undefined) return;
    this.#timers.clearTimeout(this.#deadline);
    this.#deadline = undefined;
  }

  /** Stops for good (the stream ended). */
  stop(): void {
    this.#stopped = true;
    if (this.#tick !== undefined) this.#timers.clearTimeout(this.#tick);
    this.alive();
    this.#tick = undefined;
  }

  #schedule(): void {
    this.#tick = this.#timers.setTimeout(() => this.#onTick(), this.#options.intervalMs);
  }

  #onTick(): void {
    if (this.#stopped) return;
    if (this.#deadline === undefined) {
      this.#deadline = this.#timers.setTimeout(() => this.#expire(), this.#options.timeoutMs);
    }
    this.#schedule();
    this.#hooks.ping();
  }

  #expire(): void {
    this.#deadline = undefined;
    if (this.#stopped) return;
    this.stop();
    const { intervalMs, timeoutMs } = this.#options;
    this.#hooks.expired(
      new KnpError(
        "TIMEOUT",
        `keepalive: nothing from ${this.#peer} within ${timeoutMs} ms of a ping ` +
          `(keepalive time ${intervalMs} ms, timeout ${timeoutMs} ms)`,
      ),
    );
  }
}

/** Longest a keepalive ping may go unanswered: gRPC's default keepalive timeout. */
export const MAX_KEEPALIVE_TIMEOUT_MS = 20_000;

/**
 * The keepalive of a `--keepalive-time` of `timeMs`: a ping every `timeMs`, and the peer is dead
 * when nothing answers within `min(timeMs, 20 s)` of a ping. A dead peer is so found at most
 * `timeMs + min(timeMs, 20 s)` after it went silent. `undefined` (no keepalive) for 0.
 */
export function keepaliveFor(timeMs: number): KeepaliveOptions | undefined {
  if (!(Number.isFinite(timeMs) && timeMs > 0)) return undefined;
  return { intervalMs: timeMs, timeoutMs: Math.min(timeMs, MAX_KEEPALIVE_TIMEOUT_MS) };
}
