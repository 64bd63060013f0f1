/**
 * What knp's two binaries share: the pflag-compatible flag parser, Go durations, JSON-lines
 * logging setup and upstream's signal handling.
 *
 * @module
 */

export * from "./binary.ts";
export * from "./duration.ts";
export * from "./flags.ts";
