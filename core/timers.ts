/**
 * Injected time, so state machines can be driven by fake clocks in tests.
 *
 * @module
 */

/** The clock and timers a state machine uses. */
export interface Timers {
  now(): number;
  setTimeout(callback: () => void, ms: number): number;
  clearTimeout(handle: number): void;
}

/** The real clock. */
export const realTimers: Timers = {
  now: () => performance.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms) as unknown as number,
  clearTimeout: (handle) => clearTimeout(handle),
};
