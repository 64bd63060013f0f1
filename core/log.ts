/**
 * Structured logging. Library code takes a {@linkcode Logger} and never prints. The binaries pass
 * one backed by LogTape (`@knp/cli/log_tape`); {@linkcode jsonLogger} writes one JSON object per
 * line without LogTape.
 *
 * @module
 */

/** Structured fields: dialID, connectID, agentID, serverID and the like. */
export type LogFields = Record<string, unknown>;

/** The logging interface every component accepts. */
export interface Logger {
  /** Logs detail for debugging. */
  debug(message: string, fields?: LogFields): void;
  /** Logs a normal event. */
  info(message: string, fields?: LogFields): void;
  /** Logs something unexpected that was handled. */
  warn(message: string, fields?: LogFields): void;
  /** Logs a failure. */
  error(message: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every record. */
  with(fields: LogFields): Logger;
  /**
   * Logs one packet's passage (klog `-v=5` and above). Optional: a logger without it drops such
   * records, and `log.trace?.(…)` then does not even build the fields.
   */
  trace?(message: string, fields?: LogFields): void;
  /**
   * A logger for sub-module `name`, one category below this one (`["knp", "agent"]` →
   * `["knp", "agent", "dialer"]`), keeping this logger's fields. Optional: see
   * {@linkcode childLogger}.
   */
  child?(name: string): Logger;
}

/** `log.child(name)`, or `log` itself for a logger without categories. */
export function childLogger(log: Logger, name: string): Logger {
  return log.child?.(name) ?? log;
}

/** A log level name. */
export type LogLevel = "debug" | "info" | "warn" | "error";
const LEVELS: Readonly<Record<LogLevel, number>> = { debug: 10, info: 20, warn: 30, error: 40 };

/** A logger that drops everything (the library default). */
export const nullLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  with() {
    return nullLogger;
  },
};

/** Options of {@linkcode jsonLogger}. */
export interface JsonLoggerOptions {
  /** Records below this level are dropped. @default "info" */
  level?: LogLevel;
  /** Where lines go; defaults to stderr. */
  write?: (line: string) => void;
  /** "json" (default) or "text" (`time level message key=value`). */
  format?: "json" | "text";
  /** Fields added to every record. */
  fields?: LogFields;
}

function replacer(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Error) return value.message;
  return value;
}

/** A logger writing JSON lines (bigints as decimal strings). */
export function jsonLogger(options: JsonLoggerOptions = {}): Logger {
  const min = LEVELS[options.level ?? "info"];
  const encoder = new TextEncoder();
  const write = options.write ?? ((line: string) => Deno.stderr.writeSync(encoder.encode(line)));
  const format = options.format ?? "json";
  const base = options.fields ?? {};
  function emit(level: LogLevel, message: string, fields?: LogFields) {
    if (LEVELS[level] < min) return;
    const time = new Date().toISOString();
    if (format === "json") {
      write(JSON.stringify({ time, level, msg: message, ...base, ...fields }, replacer) + "\n");
    } else {
      const kv = Object.entries({ ...base, ...fields })
        .map(([k, v]) => `${k}=${JSON.stringify(v, replacer)}`).join(" ");
      write(`${time} ${level.toUpperCase()} ${message}${kv ? " " + kv : ""}\n`);
    }
  }
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    with: (fields) => jsonLogger({ ...options, fields: { ...base, ...fields } }),
  };
}

/** Maps klog's `-v` verbosity to a level: info below 5 (upstream's mains default to 4), debug at 5+. */
export function levelFromVerbosity(v: number): LogLevel {
  return v >= 5 ? "debug" : "info";
}
