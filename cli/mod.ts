/**
 * What knp's two binaries share: the pflag-compatible flag parser, Go durations, the flags both
 * binaries accept, JSON-lines logging setup, upstream's signal handling and the permission check.
 *
 * @module
 */

export * from "./binary.ts";
export * from "./common_flags.ts";
export * from "./duration.ts";
export * from "./flag_checks.ts";
export * from "./flag_help.ts";
export * from "./flag_values.ts";
export * from "./flags.ts";
export * from "./http_server.ts";
export * from "./permissions.ts";
