/**
 * Shared helpers of the unit tests that drive the state machines on a fake clock over in-memory
 * packet pipes. Not part of the library.
 *
 * @module
 */

import FakeTimers from "@sinonjs/fake-timers";
import type { DecodedPacket } from "@knp/proto";
import type { PacketStream } from "@knp/transport/packet_stream";
import type { Timers } from "@knp/core/timers";

/**
 * A fake clock (advanced by hand with `clock.tick`, timers fired in order) and the
 * {@linkcode Timers} seam it drives; `start` is its first `now()`.
 */
export function fakeTimers(start = 0): { clock: FakeTimers.Clock; timers: Timers } {
  const clock = FakeTimers.createClock(start);
  const timers: Timers = {
    now: () => clock.now,
    setTimeout: (cb, ms) => clock.setTimeout(cb, ms) as unknown as number,
    clearTimeout: (h) => clock.clearTimeout(h),
  };
  return { clock, timers };
}

/** One end of a pipe, started, with everything it received. */
export interface Peer {
  end: PacketStream;
  packets: DecodedPacket[];
  ends: (Error | undefined)[];
  /** Received packets of one type. */
  of<T extends DecodedPacket["type"]>(type: T): Extract<DecodedPacket, { type: T }>[];
  /** Forgets what was received so far. */
  clear(): void;
}

/** Starts `end`, recording every packet it receives and how it ended. */
export function startPeer(end: PacketStream): Peer {
  const packets: DecodedPacket[] = [];
  const ends: (Error | undefined)[] = [];
  end.start({ onPacket: (p) => packets.push(p), onEnd: (e) => ends.push(e) });
  return {
    end,
    packets,
    ends,
    of<T extends DecodedPacket["type"]>(type: T) {
      return packets.filter((x) => x.type === type) as Extract<DecodedPacket, { type: T }>[];
    },
    clear() {
      packets.length = 0;
    },
  };
}
