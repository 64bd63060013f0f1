/**
 * The state-machine layer of knp: typed errors and the dial-error taxonomy, byte-counted
 * backpressure, injectable timers and the logging interface. No I/O.
 *
 * @module
 */

export * from "./backpressure.ts";
export * from "./destination_policy.ts";
export * from "./dial_errors.ts";
export * from "./errors.ts";
export * from "./log.ts";
export * from "./self_deny_rules.ts";
export * from "./timers.ts";
