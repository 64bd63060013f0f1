/**
 * The binaries' logging through LogTape (`npm:@logtape/logtape`).
 *
 * Library code keeps logging through knp's own {@linkcode Logger} interface (`@knp/core/log`);
 * {@linkcode logTapeLogger} adapts a LogTape logger to it, so an embedder that already configures
 * LogTape passes `logTapeLogger(getLogger(["my-app", "knp"]))` and gets knp's records in its own
 * sinks. The binaries call {@linkcode configureBinaryLogging}: one JSON object per line on
 * stderr (or `--knp-log-format=text`), written synchronously so nothing is lost when the process
 * exits.
 *
 * Categories: `["knp", "server"]` or `["knp", "agent"]`, and one level below per module
 * (`["knp", "server", "core"]`, `["knp", "agent", "dialer"]`, …; see
 * {@linkcode childLogger}). Each JSON record carries the category as `logger`
 * (`"knp.agent.dialer"`) next to `time`, `level`, `msg` and its fields.
 *
 * klog's `-v`: below 5 the binaries log info and above (lifecycle events, warnings, errors); at 5
 * and above also debug records and the per-packet trace records.
 *
 * ```ts
 * import { getLogger } from "@logtape/logtape";
 *
 * const log = logTapeLogger(getLogger(["my-app", "knp"]));
 * log.with({ agentID: "a1" }).info("agent connected"); // dropped until LogTape is configured
 * ```
 *
 * @module
 */

import {
  configureSync,
  getLogger,
  type LogLevel as LogTapeLevel,
  type LogRecord as LogTapeRecord,
  type Sink,
} from "@logtape/logtape";
import type { LogFields, Logger } from "@knp/core/log";

/** Properties of a LogTape record. */
export type LogTapeProperties = Record<string, unknown>;

/** What {@linkcode logTapeLogger} uses of a LogTape logger (LogTape's `Logger` has all of it). */
export interface LogTapeLike {
  /** Logs at trace level. */
  trace(message: string, properties: LogTapeProperties): void;
  /** Logs at debug level. */
  debug(message: string, properties: LogTapeProperties): void;
  /** Logs at info level. */
  info(message: string, properties: LogTapeProperties): void;
  /** Logs at warning level. */
  warning(message: string, properties: LogTapeProperties): void;
  /** Logs at error level. */
  error(message: string, properties: LogTapeProperties): void;
  /** A logger adding `properties` to every record. */
  with(properties: LogTapeProperties): LogTapeLike;
  /** The logger of a subcategory. */
  getChild(subcategory: string): LogTapeLike;
  /** Whether records at `level` would be logged. */
  isEnabledFor(level: "trace"): boolean;
}

/** How the binaries write records: JSON lines (default) or text lines. */
export type LogFormat = "json" | "text";

/** Level names as knp's JSON records spell them (`warn`, as before LogTape). */
const LEVEL_NAMES: Readonly<Record<LogTapeLevel, string>> = {
  trace: "trace",
  debug: "debug",
  info: "info",
  warning: "warn",
  error: "error",
  fatal: "fatal",
};

/**
 * The lowest level the binaries log at klog verbosity `v`: `info` below 5; `trace` (debug
 * records and per-packet records too) at 5 and above.
 */
export function levelForVerbosity(v: number): "trace" | "info" {
  return v >= 5 ? "trace" : "info";
}

/**
 * Adapts a LogTape logger to knp's {@linkcode Logger}. `with` adds LogTape properties, `child`
 * is LogTape's `getChild`. `trace` (per-packet records) is present only when the LogTape logger
 * has trace enabled when this is called, so `log.trace?.(…)` costs nothing otherwise.
 */
export function logTapeLogger(lt: LogTapeLike): Logger {
  const logger: Logger = {
    debug: (message, fields) => lt.debug(message, fields ?? {}),
    info: (message, fields) => lt.info(message, fields ?? {}),
    warn: (message, fields) => lt.warning(message, fields ?? {}),
    error: (message, fields) => lt.error(message, fields ?? {}),
    with: (fields: LogFields) => logTapeLogger(lt.with(fields)),
    child: (name: string) => logTapeLogger(lt.getChild(name)),
  };
  if (lt.isEnabledFor("trace")) {
    logger.trace = (message, fields) => lt.trace(message, fields ?? {});
  }
  return logger;
}

function replacer(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Error) return value.message;
  return value;
}

/** The message as written: the raw text (knp never uses LogTape's `{placeholder}` syntax). */
function messageOf(record: LogTapeRecord): string {
  const raw = record.rawMessage;
  return typeof raw === "string" ? raw : record.message.map(String).join("");
}

/**
 * Formats a record as one JSON line: `time`, `level`, `msg`, the fields, then `logger` (the
 * category, dotted); bigints as decimal strings, errors as their message.
 */
function jsonLine(record: LogTapeRecord): string {
  return JSON.stringify({
    time: new Date(record.timestamp).toISOString(),
    level: LEVEL_NAMES[record.level],
    msg: messageOf(record),
    ...record.properties,
    logger: record.category.join("."),
  }, replacer) + "\n";
}

/** Formats a record as `time LEVEL [category] message key=value…`. */
function textLine(record: LogTapeRecord): string {
  const kv = Object.entries(record.properties)
    .map(([k, v]) => `${k}=${JSON.stringify(v, replacer)}`).join(" ");
  const time = new Date(record.timestamp).toISOString();
  const level = LEVEL_NAMES[record.level].toUpperCase();
  return `${time} ${level} [${record.category.join(".")}] ${messageOf(record)}${
    kv ? " " + kv : ""
  }\n`;
}

/** A sink writing each formatted record synchronously (nothing is lost at `Deno.exit`). */
function lineSink(format: LogFormat, write: (bytes: Uint8Array) => void): Sink {
  const encoder = new TextEncoder();
  const toLine = format === "text" ? textLine : jsonLine;
  return (record) => write(encoder.encode(toLine(record)));
}

/** Writes all of `bytes` to stderr. */
function writeStderr(bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += Deno.stderr.writeSync(bytes.subarray(done));
}

/** Options of {@linkcode configureBinaryLogging}. */
export interface BinaryLoggingOptions {
  /** The binary's category below `knp`: `"server"` or `"agent"`. */
  binary: string;
  /** klog's `-v`. */
  v: number;
  /** `--knp-log-format`. */
  format: LogFormat;
  /** Where lines go; defaults to stderr. */
  write?: (bytes: Uint8Array) => void;
}

/**
 * Configures LogTape for a binary (replacing any earlier configuration) and returns the knp
 * {@linkcode Logger} of category `["knp", binary]`. LogTape's own meta records (warnings only)
 * go to the same sink.
 */
export function configureBinaryLogging(options: BinaryLoggingOptions): Logger {
  const sink = lineSink(options.format, options.write ?? writeStderr);
  configureSync({
    reset: true,
    sinks: { stderr: sink },
    loggers: [
      { category: ["knp"], lowestLevel: levelForVerbosity(options.v), sinks: ["stderr"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
  return logTapeLogger(getLogger(["knp", options.binary]));
}
