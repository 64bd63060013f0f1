/**
 * `FrontendConnection`: the state of one frontend stream and the single connection it carries,
 * with its deadline timer and the reasons its reading is paused.
 *
 * @module
 */

import type { SinkGuard } from "@knp/core/backpressure";
import type { Timers } from "@knp/core/timers";
import type { DecodedPacket } from "@knp/proto";
import type { PacketHandler, PacketStream } from "@knp/transport/packet_stream";
import type { Backend } from "./backend.ts";

/** Where a frontend's connection is in its life. */
export type FrontendState = "idle" | "pending" | "established" | "closing" | "done";

/** Why reading a frontend is paused: the agent stream is full, or no credit is left. */
export type HoldReason = "link" | "credit";

const HOLD_BITS: Record<HoldReason, number> = { link: 1, credit: 2 };

/** Where a frontend's packets and end go: one object per core, shared by its connections. */
export interface FrontendDispatch {
  /** A packet from `conn`'s frontend. */
  packet(conn: FrontendConnection, packet: DecodedPacket): void;
  /** `conn`'s frontend stream ended. */
  end(conn: FrontendConnection): void;
}

/**
 * One frontend stream and the single connection it carries. It is also its stream's handler
 * (through the core's shared {@linkcode FrontendDispatch}): no handler object per connection.
 */
export class FrontendConnection implements PacketHandler {
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
  /** Why reading this frontend is paused: a bit per {@linkcode HoldReason} (no Set per connection). */
  #holds = 0;
  /** Made on first use of `ended` (an idle connection nobody awaits holds no promise). */
  #ended: PromiseWithResolvers<void> | undefined;
  #isEnded = false;

  readonly #dispatch: FrontendDispatch | undefined;

  /** State for a new frontend stream, whose packets and end go to `dispatch`. */
  constructor(stream: PacketStream, userAgent: string, dispatch?: FrontendDispatch) {
    this.stream = stream;
    this.userAgent = userAgent;
    this.#dispatch = dispatch;
  }

  /** The stream's packet, to the core. */
  onPacket(packet: DecodedPacket): void {
    this.#dispatch?.packet(this, packet);
  }

  /** The stream's end, to the core. */
  onEnd(): void {
    this.#dispatch?.end(this);
  }

  /** Resolves once the frontend stream has ended and the core has let go of it. */
  get ended(): Promise<void> {
    if (this.#ended === undefined) {
      this.#ended = Promise.withResolvers<void>();
      if (this.#isEnded) this.#ended.resolve();
    }
    return this.#ended.promise;
  }

  /** Marks the stream as over (called by the core). */
  markEnded(): void {
    this.#isEnded = true;
    this.#ended?.resolve();
  }

  /** Whether reading is paused for `why`. */
  held(why: HoldReason): boolean {
    return (this.#holds & HOLD_BITS[why]) !== 0;
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
    if (this.#holds === 0) this.stream.pause();
    this.#holds |= HOLD_BITS[why];
  }

  /** Drops one reason to pause; reading resumes when none is left. */
  release(why: HoldReason): void {
    const bit = HOLD_BITS[why];
    if ((this.#holds & bit) === 0) return;
    this.#holds &= ~bit;
    if (this.#holds !== 0) return;
    if (this.state === "established") this.stream.resume();
  }
}
