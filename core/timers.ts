/**
 * Injected time, so state machines can be driven by fake clocks in tests.
 *
 * @module
 */

/** The clock and timers a state machine uses. */
export interface Timers {
  /** Milliseconds on a monotonic clock. */
  now(): number;
  /** Runs `callback` after `ms` milliseconds; returns a handle for `clearTimeout`. */
  setTimeout(callback: () => void, ms: number): number;
  /** Cancels a pending `setTimeout`. */
  clearTimeout(handle: number): void;
}

/** The real clock. */
export const realTimers: Timers = {
  now: () => performance.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms) as unknown as number,
  clearTimeout: (handle) => clearTimeout(handle),
};
