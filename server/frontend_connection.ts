/**
 * `FrontendConnection`: the state of one frontend stream and the single connection it carries,
 * with its deadline timer and the reasons its reading is paused.
 *
 * @module
 */

import type { SinkGuard } from "@knp/core/backpressure";
import type { Timers } from "@knp/core/timers";
import type { PacketStream } from "@knp/transport/packet_stream";
import type { Backend } from "./backend.ts";

/** Where a frontend's connection is in its life. */
export type FrontendState = "idle" | "pending" | "established" | "closing" | "done";

/** Why reading a frontend is paused: the agent stream is full, or no credit is left. */
export type HoldReason = "link" | "credit";

/** One frontend stream and the single connection it carries. */
export class FrontendConnection {
  /** The frontend's packet stream. */
  readonly stream: PacketStream;
  /** The frontend's `user-agent` metadata. */
  readonly userAgent: string;
  /** Where the connection is in its life. */
  state: FrontendState = "idle";
  /** The `random` of the frontend's DIAL_REQ. */
  dialId = 0n;
  /** The address being dialed. */
  address = "";
  /** The agent's connection id, once established. */
  connectId = 0n;
  /** The agent carrying the connection. */
  backend: Backend | undefined;
  /** When the dial was sent to the agent (`Timers.now()`). */
  dialStart = 0;
  /** The pending deadline's handle. */
  timer: number | undefined;
  /** Backpressure toward the frontend, once established. */
  guard: SinkGuard | undefined;
  /** Flow control (negotiated agents only): bytes we may still send the agent. */
  credit = 0;
  /** Flow control: bytes from the agent passed on to the frontend but not yet granted back. */
  ungranted = 0;
  /** Why reading this frontend is paused. */
  readonly holds: Set<HoldReason> = new Set();
  readonly #ended = Promise.withResolvers<void>();

  /** State for a new frontend stream. */
  constructor(stream: PacketStream, userAgent: string) {
    this.stream = stream;
    this.userAgent = userAgent;
  }

  /** Resolves once the frontend stream has ended and the core has let go of it. */
  get ended(): Promise<void> {
    return this.#ended.promise;
  }

  /** Marks the stream as over (called by the core). */
  markEnded(): void {
    this.#ended.resolve();
  }

  /** Arms the connection's single deadline, replacing any earlier one. */
  setTimer(timers: Timers, ms: number, fire: () => void): void {
    this.clearTimer(timers);
    this.timer = timers.setTimeout(() => {
      this.timer = undefined;
      fire();
    }, ms);
  }

  /** Cancels the pending deadline, if any. */
  clearTimer(timers: Timers): void {
    if (this.timer !== undefined) timers.clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Pauses reading for one reason; it resumes when no reason is left. */
  hold(why: HoldReason): void {
    if (this.holds.size === 0) this.stream.pause();
    this.holds.add(why);
  }

  /** Drops one reason to pause; reading resumes when none is left. */
  release(why: HoldReason): void {
    if (!this.holds.delete(why) || this.holds.size > 0) return;
    if (this.state === "established") this.stream.resume();
  }
}
