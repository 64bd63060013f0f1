/**
 * Flags both binaries accept: klog's, profiling and knp's `--knp-log-format`.
 *
 * @module
 */

import { type FlagSpec, type FlagValue, invalidFlag } from "./flags.ts";

/** Values of the klog flags, shared by both binaries' options. */
export interface KlogOptions {
  /** `--log-dir`: not implemented. @default "" */
  logDir: string;
  /** `--log-file`: not implemented. @default "" */
  logFile: string;
  /** `--log-file-max-size` in MB: not implemented. @default 1800 */
  logFileMaxSize: number;
  /** `--logtostderr`: knp always logs to stderr. @default true */
  logtostderr: boolean;
  /** `--alsologtostderr`: not implemented. @default false */
  alsologtostderr: boolean;
  /** `--legacy-stderr-threshold-behavior`: not implemented. @default true */
  legacyStderrThresholdBehavior: boolean;
  /** `-v`/`--v`: log verbosity; upstream's binaries default to 4. @default 4 */
  v: number;
  /** `--add-dir-header`: not implemented. @default false */
  addDirHeader: boolean;
  /** `--skip-headers`: not implemented. @default false */
  skipHeaders: boolean;
  /** `--one-output`: not implemented. @default false */
  oneOutput: boolean;
  /** `--skip-log-headers`: not implemented. @default false */
  skipLogHeaders: boolean;
  /** `--stderrthreshold`: not implemented. @default "ERROR" */
  stderrthreshold: string;
  /** `--alsologtostderrthreshold`: not implemented. @default "INFO" */
  alsologtostderrthreshold: string;
  /** `--vmodule`: not implemented. @default "" */
  vmodule: string;
  /** `--log-backtrace-at`: not implemented. @default "" */
  logBacktraceAt: string;
}

const SEVERITIES = ["INFO", "WARNING", "ERROR", "FATAL"];

function checkSeverity(value: FlagValue): string | undefined {
  const text = String(value);
  if (SEVERITIES.includes(text.toUpperCase())) return undefined;
  if (/^\d+$/.test(text) && Number(text) < SEVERITIES.length) return undefined;
  return `must be one of INFO, WARNING, ERROR, FATAL or 0-3`;
}

function checkNonNegative(value: FlagValue): string | undefined {
  return (value as number) < 0 ? "must not be negative" : undefined;
}

function checkLevel(value: FlagValue): string | undefined {
  const level = value as number;
  return level < -(2 ** 31) || level >= 2 ** 31 ? "out of range for a log level" : undefined;
}

const KLOG_NOT_IMPLEMENTED = "not implemented (knp logs to stderr only)";

/**
 * klog's flags, accepted by both binaries with klog's defaults (except `-v`, which upstream's
 * binaries set to 4). Only `-v` and `--logtostderr` have an effect in knp.
 */
export const KLOG_FLAGS: readonly FlagSpec[] = [
  {
    name: "log-dir",
    type: "string",
    default: "",
    help: "Directory for log files.",
    implemented: KLOG_NOT_IMPLEMENTED,
  },
  {
    name: "log-file",
    type: "string",
    default: "",
    help: "File to write logs to.",
    implemented: KLOG_NOT_IMPLEMENTED,
  },
  {
    name: "log-file-max-size",
    type: "int",
    default: 1800,
    help: "Maximum log file size in megabytes; 0 means unlimited.",
    implemented: KLOG_NOT_IMPLEMENTED,
    check: checkNonNegative,
  },
  {
    name: "logtostderr",
    type: "bool",
    default: true,
    help: "Log to standard error (knp always does).",
    implemented: true,
  },
  {
    name: "alsologtostderr",
    type: "bool",
    default: false,
    help: "Log to standard error as well as to files.",
    implemented: KLOG_NOT_IMPLEMENTED,
  },
  {
    name: "legacy-stderr-threshold-behavior",
    type: "bool",
    default: true,
    help: "Apply --stderrthreshold only when also logging to files.",
    implemented: KLOG_NOT_IMPLEMENTED,
  },
  {
    name: "v",
    short: "v",
    type: "int",
    default: 4,
    help: "Log verbosity level; higher is more verbose.",
    implemented: true,
    check: checkLevel,
  },
  {
    name: "add-dir-header",
    type: "bool",
    default: false,
    help: "Add the source file's directory to log headers.",
    implemented: KLOG_NOT_IMPLEMENTED,
  },
  {
    name: "skip-headers",
    type: "bool",
    default: false,
    help: "Leave out the header prefix of log lines.",
    implemented: KLOG_NOT_IMPLEMENTED,
  },
  {
    name: "one-output",
    type: "bool",
    default: false,
    help: "Write each log line only to its own severity level's file.",
    implemented: KLOG_NOT_IMPLEMENTED,
  },
  {
    name: "skip-log-headers",
    type: "bool",
    default: false,
    help: "Leave out the header written when a log file is opened.",
    implemented: KLOG_NOT_IMPLEMENTED,
  },
  {
    name: "stderrthreshold",
    type: "string",
    default: "ERROR",
    help: "Lowest severity also written to standard error when logging to files.",
    implemented: KLOG_NOT_IMPLEMENTED,
    check: checkSeverity,
  },
  {
    name: "alsologtostderrthreshold",
    type: "string",
    default: "INFO",
    help: "Lowest severity written to standard error when --alsologtostderr is set.",
    implemented: KLOG_NOT_IMPLEMENTED,
    check: checkSeverity,
  },
  {
    name: "vmodule",
    type: "string",
    default: "",
    help: "Per-file verbosity, as a comma-separated list of pattern=N.",
    implemented: KLOG_NOT_IMPLEMENTED,
  },
  {
    name: "log-backtrace-at",
    type: "string",
    default: "",
    help: "Emit a stack trace when logging at file:line.",
    implemented: KLOG_NOT_IMPLEMENTED,
  },
];

/**
 * `--enable-profiling` and `--enable-contention-profiling`, accepted by both binaries with
 * upstream's defaults; not implemented yet.
 */
export const PROFILING_FLAGS: readonly FlagSpec[] = [
  {
    name: "enable-profiling",
    type: "bool",
    default: false,
    help: "Serve profiling endpoints on the admin port.",
    implemented: "not implemented yet",
  },
  {
    name: "enable-contention-profiling",
    type: "bool",
    default: false,
    help: "Enable contention profiling; requires --enable-profiling.",
    implemented: "not implemented yet",
  },
];

/** Log line formats knp's binaries can write. */
export type LogFormat = "json" | "text";

/**
 * Checks `--knp-log-format` on options built in code (the flag's own check covers the command line).
 *
 * @param format The log format.
 * @throws {KnpError} `INVALID_FLAG` unless it is `json` or `text`.
 */
export function requireLogFormat(format: string): void {
  if (format !== "json" && format !== "text") {
    throw invalidFlag(`--knp-log-format: must be json or text, got "${format}"`);
  }
}

/** The knp-only `--knp-log-format` flag, shared by both binaries. */
/** knp's bound on a health or admin connection (both binaries). */
export const KNP_HTTP_TIMEOUT_FLAG: FlagSpec = {
  name: "knp-http-timeout",
  type: "duration",
  default: 10_000,
  help: "knp only: bound on a health or admin connection, from accept to the end of its " +
    "response (one request per connection); a client that sends nothing is closed after it.",
  implemented: true,
};

/** knp's log format flag (json or text), shared by both binaries. */
export const KNP_LOG_FORMAT_FLAG: FlagSpec = {
  name: "knp-log-format",
  type: "string",
  default: "json",
  help: "knp only: format of log lines on standard error, json or text.",
  implemented: true,
  check: (value) => (value === "json" || value === "text" ? undefined : `must be json or text`),
};

/**
 * The knp-only `--knp-print-permissions` flag, shared by both binaries: print the `deno run`
 * permission flags the other arguments need (the server adds its V8 flag), one per line, and exit.
 */
export const KNP_PRINT_PERMISSIONS_FLAG: FlagSpec = {
  name: "knp-print-permissions",
  type: "bool",
  default: false,
  help: "knp only: print the deno run permission flags the other arguments need (and any V8 " +
    "flag the binary runs with), one per line, and exit.",
  implemented: true,
};
