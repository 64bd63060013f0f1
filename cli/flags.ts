/**
 * A small command-line parser that accepts what spf13/pflag accepts, driven by a table of flag
 * specs, so knp's binaries take the same arguments as the upstream Go binaries.
 *
 * Syntax: `--name=value`, `--name value`, bare `--bool` (true) and `--bool=false`; shorthands
 * `-v=4`, `-v 4`, `-v4`; `-h`/`--help`; `--` ends the flags. Single-dash long names (`-name`) are
 * rejected, as pflag rejects them. Integers use Go's `strconv.ParseInt(s, 0, 64)` syntax (decimal,
 * `0x`, `0o`, `0b`, leading-zero octal, `_` separators); durations use Go syntax (`1h0m0s`).
 * String slices are comma-separated (CSV quoting honoured); `""` and `[]` mean empty; the first
 * explicit use replaces the default and later uses append.
 *
 * knp differences from pflag: positional arguments are an error (upstream silently ignores them),
 * and a slice value written in pflag's printed form `[a,b]` is unwrapped (upstream's test harness
 * passes `--alpn-proto=[]`, which pflag would take as the one-element list `["[]"]`).
 *
 * @module
 */

import { KnpError } from "@knp/core/errors";
import { formatGoDuration, parseGoDuration } from "./duration.ts";

/** Value types a flag can have. `float` is pflag's float32 (e.g. `--kubeconfig-qps`). */
export type FlagType = "string" | "bool" | "int" | "float" | "duration" | "stringSlice";

/** A parsed flag value. Durations are milliseconds. */
export type FlagValue = string | boolean | number | string[];

/** One command-line flag. */
export interface FlagSpec {
  /** Long name without dashes, e.g. `"server-port"`. */
  readonly name: string;
  /** Value type. */
  readonly type: FlagType;
  /** Default value (durations in ms), or a function computing it at parse time. */
  readonly default: FlagValue | (() => FlagValue);
  /** One-line help text. */
  readonly help: string;
  /**
   * `true` if knp honours the flag. `false` or a reason string (e.g. `"not implemented yet
   * (planned)"`) if it is accepted for compatibility but has no effect.
   */
  readonly implemented: boolean | string;
  /** Left out of the help text. */
  readonly hidden?: boolean;
  /** Deprecation note; using the flag adds a message to `deprecated`. Deprecated flags are hidden. */
  readonly deprecated?: string;
  /** Environment variable used when the flag is not given (an empty value counts as unset). */
  readonly env?: string;
  /** One-letter shorthand, e.g. `"v"` for `-v`. */
  readonly short?: string;
  /** Name of another flag this one is an alias of; values are written to that flag. */
  readonly alias?: string;
  /** Text shown as the default in help instead of the computed default. */
  readonly defaultText?: string;
  /** Extra check of an explicitly given value; returns the problem, or `undefined` if valid. */
  readonly check?: (value: FlagValue) => string | undefined;
}

/** Result of parsing a command line that did not ask for help. */
export interface ParsedFlags {
  /** Every flag's value keyed by its camelCase name (aliases excluded). */
  readonly values: Record<string, FlagValue>;
  /** Long names of the flags given explicitly on the command line (an alias also marks its target). */
  readonly set: Set<string>;
  /**
   * One line per explicitly given flag that knp accepts but does not implement, when the value
   * given differs from the default (giving an unimplemented flag its default value is harmless).
   */
  readonly notImplemented: string[];
  /** One line per deprecated flag that was given. */
  readonly deprecated: string[];
}

/** Result of parsing a command line that asked for help (`-h`/`--help`). */
export interface HelpRequested {
  readonly help: true;
}

/** Options for {@linkcode parseFlags}. */
export interface ParseFlagsOptions {
  /**
   * Environment used for flags with an `env` fallback.
   * @default {}
   */
  readonly env?: Record<string, string | undefined>;
}

/** Converts a flag name to the key used in {@linkcode ParsedFlags.values}: `uds-name` → `udsName`. */
export function camelCaseFlagName(name: string): string {
  return name.replace(/-([a-z0-9])/g, (_, ch: string) => ch.toUpperCase());
}

/**
 * An `INVALID_FLAG` error with a one-line message that names the flag.
 *
 * @param message The message, e.g. `"--server-port: must be 0 when --uds-name is set, got 8090"`.
 * @returns The error, to throw.
 */
export function invalidFlag(message: string): KnpError {
  return new KnpError("INVALID_FLAG", message);
}

const TRUE_WORDS = new Set(["1", "t", "T", "true", "TRUE", "True"]);
const FALSE_WORDS = new Set(["0", "f", "F", "false", "FALSE", "False"]);

/** Parses a boolean the way Go's `strconv.ParseBool` does. */
export function parseGoBool(text: string): boolean {
  if (TRUE_WORDS.has(text)) return true;
  if (FALSE_WORDS.has(text)) return false;
  throw new SyntaxError(`Cannot parse "${text}" as a boolean: use true or false`);
}

const DIGITS: Record<number, RegExp> = {
  2: /^[01]+(_[01]+)*$/,
  8: /^[0-7]+(_[0-7]+)*$/,
  10: /^[0-9]+(_[0-9]+)*$/,
  16: /^[0-9a-fA-F]+(_[0-9a-fA-F]+)*$/,
};

/**
 * Parses an integer the way Go's `strconv.ParseInt(text, 0, 64)` does (base from the prefix,
 * `_` separators between digits), limited to JavaScript's safe integer range.
 */
export function parseGoInt(text: string): number {
  let body = text;
  let sign = 1n;
  if (body.startsWith("+") || body.startsWith("-")) {
    sign = body[0] === "-" ? -1n : 1n;
    body = body.slice(1);
  }
  let base = 10;
  let prefix = "";
  const lower = body.slice(0, 2).toLowerCase();
  if (lower === "0x" || lower === "0o" || lower === "0b") {
    base = lower === "0x" ? 16 : lower === "0o" ? 8 : 2;
    prefix = body.slice(0, 2);
  } else if (body.length > 1 && body[0] === "0") {
    base = 8;
    prefix = "0";
  }
  let digits = body.slice(prefix.length);
  // With a base prefix, one separator may follow the prefix directly (`0x_1f`).
  if (prefix !== "" && digits.startsWith("_")) digits = digits.slice(1);
  if (!DIGITS[base]!.test(digits)) {
    throw new SyntaxError(`Cannot parse "${text}" as an integer`);
  }
  const radix = base === 16 ? "0x" : base === 8 ? "0o" : base === 2 ? "0b" : "";
  const value = sign * BigInt(radix + digits.replaceAll("_", ""));
  if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
    throw new RangeError(`Integer "${text}" is out of range`);
  }
  return Number(value);
}

const FLOAT_SYNTAX = /^[+-]?(\d+(_\d+)*(\.(\d+(_\d+)*)?)?|\.\d+(_\d+)*)([eE][+-]?\d+)?$/;

/** Parses a decimal floating-point number (Go `strconv.ParseFloat` decimal syntax, plus inf/nan). */
export function parseGoFloat(text: string): number {
  const lower = text.toLowerCase().replace(/^\+/, "");
  if (lower === "inf" || lower === "infinity") return Infinity;
  if (lower === "-inf" || lower === "-infinity") return -Infinity;
  if (lower === "nan") return NaN;
  if (!FLOAT_SYNTAX.test(text)) throw new SyntaxError(`Cannot parse "${text}" as a number`);
  return Number(text.replaceAll("_", ""));
}

/** Splits one CSV record (`a,"b,c",d`) the way pflag's string slices do. */
export function splitCsvRecord(text: string): string[] {
  if (text === "") return [];
  const fields: string[] = [];
  let i = 0;
  while (true) {
    let field = "";
    if (text[i] === '"') {
      i++;
      while (true) {
        if (i >= text.length) throw new SyntaxError(`Unterminated quote in "${text}"`);
        if (text[i] === '"') {
          if (text[i + 1] === '"') {
            field += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        field += text[i];
        i++;
      }
      if (i < text.length && text[i] !== ",") {
        throw new SyntaxError(`Unexpected text after a quoted field in "${text}"`);
      }
    } else {
      const end = text.indexOf(",", i);
      field = end === -1 ? text.slice(i) : text.slice(i, end);
      if (field.includes('"')) throw new SyntaxError(`Bare quote in a field of "${text}"`);
      i = end === -1 ? text.length : end;
    }
    fields.push(field);
    if (i >= text.length) return fields;
    i++; // the comma
  }
}

/** Parses a string-slice value: `""` and `[]` are empty, `[a,b]` is unwrapped, CSV otherwise. */
export function parseStringSlice(text: string): string[] {
  const inner = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  return splitCsvRecord(inner);
}

/** Converts text to a value of the given type; throws `SyntaxError`/`RangeError` with the reason. */
export function parseFlagValue(type: FlagType, text: string): FlagValue {
  switch (type) {
    case "string":
      return text;
    case "bool":
      return parseGoBool(text);
    case "int":
      return parseGoInt(text);
    case "float":
      return parseGoFloat(text);
    case "duration":
      return parseGoDuration(text);
    case "stringSlice":
      return parseStringSlice(text);
  }
}

function describe(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.charAt(0).toLowerCase() + message.slice(1);
}

function defaultOf(spec: FlagSpec): FlagValue {
  const value = typeof spec.default === "function" ? spec.default() : spec.default;
  return Array.isArray(value) ? [...value] : value;
}

function sameValue(a: FlagValue | undefined, b: FlagValue | undefined): boolean {
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((item, index) => item === b[index]);
  }
  return Object.is(a, b);
}

function notImplementedMessage(spec: FlagSpec): string {
  const reason = typeof spec.implemented === "string" ? spec.implemented : "not implemented yet";
  return `flag --${spec.name} is accepted but ${reason}; it has no effect`;
}

/**
 * Parses a command line against a table of flag specs, pflag-style.
 *
 * @example Parse a few flags
 * ```ts
 * import assert from "node:assert/strict";
 * import { type FlagSpec, parseFlags } from "./flags.ts";
 * const specs: FlagSpec[] = [
 *   { name: "server-port", type: "int", default: 8090, help: "port", implemented: true },
 *   { name: "keepalive-time", type: "duration", default: 3_600_000, help: "ka", implemented: true },
 * ];
 * const result = parseFlags(specs, ["--server-port", "9000", "--keepalive-time=30s"]);
 * assert.ok(!("help" in result));
 * assert.equal(result.values.serverPort, 9000);
 * assert.equal(result.values.keepaliveTime, 30_000);
 * ```
 *
 * @param specs The flags the command accepts.
 * @param args The command-line arguments (without the program name).
 * @param options The environment for `env` fallbacks.
 * @returns The parsed values, or `{ help: true }` when `-h`/`--help` was given.
 * @throws {KnpError} With code `INVALID_FLAG` and a one-line message naming the flag.
 */
export function parseFlags(
  specs: readonly FlagSpec[],
  args: readonly string[],
  options: ParseFlagsOptions = {},
): ParsedFlags | HelpRequested {
  const env = options.env ?? {};
  const byName = new Map<string, FlagSpec>();
  const byShort = new Map<string, FlagSpec>();
  for (const spec of specs) {
    if (byName.has(spec.name)) throw new TypeError(`Flag "--${spec.name}" is defined twice`);
    byName.set(spec.name, spec);
    if (spec.short !== undefined) byShort.set(spec.short, spec);
  }
  for (const spec of specs) {
    if (spec.alias !== undefined && !byName.has(spec.alias)) {
      throw new TypeError(`Flag "--${spec.name}" is an alias of unknown flag "--${spec.alias}"`);
    }
  }

  const values: Record<string, FlagValue> = {};
  for (const spec of specs) {
    if (spec.alias === undefined) values[camelCaseFlagName(spec.name)] = defaultOf(spec);
  }
  const set = new Set<string>();
  const given: FlagSpec[] = [];
  const deprecated: string[] = [];

  const assign = (spec: FlagSpec, text: string, shown: string): void => {
    const target = spec.alias === undefined ? spec : byName.get(spec.alias)!;
    const key = camelCaseFlagName(target.name);
    let value: FlagValue;
    try {
      value = parseFlagValue(spec.type, text);
    } catch (err) {
      throw invalidFlag(`invalid argument "${text}" for "${shown}" flag: ${describe(err)}`);
    }
    const problem = spec.check?.(value) ?? target.check?.(value);
    if (problem !== undefined) {
      throw invalidFlag(`invalid argument "${text}" for "${shown}" flag: ${problem}`);
    }
    if (target.type === "stringSlice" && set.has(target.name)) {
      values[key] = [...(values[key] as string[]), ...(value as string[])];
    } else {
      values[key] = value;
    }
    if (!set.has(spec.name)) {
      given.push(spec);
      if (spec.deprecated !== undefined) {
        deprecated.push(`flag --${spec.name} has been deprecated: ${spec.deprecated}`);
      }
    }
    set.add(spec.name);
    set.add(target.name);
  };

  let i = 0;
  while (i < args.length) {
    const arg = args[i]!;
    i++;
    if (arg === "--") {
      if (i < args.length) {
        throw invalidFlag(`unexpected argument "${args[i]}": this command takes no arguments`);
      }
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      throw invalidFlag(`unexpected argument "${arg}": this command takes no arguments`);
    }

    if (arg.startsWith("--")) {
      const body = arg.slice(2);
      if (body.startsWith("-") || body.startsWith("=")) {
        throw invalidFlag(`bad flag syntax: ${arg}`);
      }
      const eq = body.indexOf("=");
      const name = eq === -1 ? body : body.slice(0, eq);
      let text: string | undefined = eq === -1 ? undefined : body.slice(eq + 1);
      const spec = byName.get(name);
      if (spec === undefined) {
        if (name === "help") {
          if (text === undefined || parseBoolOrThrow(text, "--help")) return { help: true };
          continue;
        }
        throw invalidFlag(`unknown flag: --${name}`);
      }
      if (text === undefined) {
        if (spec.type === "bool") {
          text = "true";
        } else if (i < args.length) {
          text = args[i]!;
          i++;
        } else {
          throw invalidFlag(`flag needs an argument: --${name}`);
        }
      }
      assign(spec, text, `--${name}`);
      continue;
    }

    // One dash: a run of shorthands, e.g. -v=4, -v 4, -v4, -h.
    let shorthands = arg.slice(1);
    while (shorthands.length > 0) {
      const ch = shorthands[0]!;
      const spec = byShort.get(ch);
      if (spec === undefined) {
        if (ch === "h") return { help: true };
        throw invalidFlag(`unknown shorthand flag: '${ch}' in ${arg}`);
      }
      let text: string;
      if (shorthands[1] === "=") {
        text = shorthands.slice(2);
        shorthands = "";
      } else if (spec.type === "bool") {
        text = "true";
        shorthands = shorthands.slice(1);
      } else if (shorthands.length > 1) {
        text = shorthands.slice(1);
        shorthands = "";
      } else if (i < args.length) {
        text = args[i]!;
        i++;
        shorthands = "";
      } else {
        throw invalidFlag(`flag needs an argument: '${ch}' in ${arg}`);
      }
      assign(spec, text, `-${ch}`);
    }
  }

  for (const spec of specs) {
    if (spec.env === undefined || spec.alias !== undefined || set.has(spec.name)) continue;
    const text = env[spec.env];
    if (text === undefined || text === "") continue;
    let value: FlagValue;
    try {
      value = parseFlagValue(spec.type, text);
    } catch (err) {
      throw invalidFlag(
        `invalid value "${text}" in environment variable ${spec.env} for "--${spec.name}" flag: ${
          describe(err)
        }`,
      );
    }
    values[camelCaseFlagName(spec.name)] = value;
  }

  const notImplemented: string[] = [];
  for (const spec of given) {
    if (spec.implemented === true) continue;
    const target = spec.alias === undefined ? spec : byName.get(spec.alias)!;
    const current = values[camelCaseFlagName(target.name)];
    if (typeof target.default === "function" || !sameValue(current, target.default)) {
      notImplemented.push(notImplementedMessage(spec));
    }
  }

  return { values, set, notImplemented, deprecated };
}

function parseBoolOrThrow(text: string, shown: string): boolean {
  try {
    return parseGoBool(text);
  } catch (err) {
    throw invalidFlag(`invalid argument "${text}" for "${shown}" flag: ${describe(err)}`);
  }
}

const TYPE_NAMES: Record<FlagType, string> = {
  string: "string",
  bool: "",
  int: "int",
  float: "float32",
  duration: "duration",
  stringSlice: "strings",
};

function defaultText(spec: FlagSpec): string | undefined {
  if (spec.defaultText !== undefined) return spec.defaultText;
  if (typeof spec.default === "function") return undefined;
  const value = spec.default;
  switch (spec.type) {
    case "string":
      return value === "" ? undefined : JSON.stringify(value);
    case "bool":
      return value === true ? "true" : undefined;
    case "int":
    case "float":
      return value === 0 ? undefined : String(value);
    case "duration":
      return value === 0 ? undefined : formatGoDuration(value as number);
    case "stringSlice":
      return (value as string[]).length === 0 ? undefined : `[${(value as string[]).join(",")}]`;
  }
}

/** Successful result of {@linkcode parseOptions}. */
export interface ParsedOptions<T> {
  /** The options (not yet validated). */
  options: T;
  /** One line per explicitly given flag knp accepts but does not implement. */
  notImplemented: string[];
  /** One line per deprecated flag given. */
  deprecated: string[];
}

/**
 * Parses a binary's arguments into its options: {@linkcode parseFlags} with the flag values typed
 * as `T` (the camelCase keys of `specs`), plus notes on values knp accepts but does not implement.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type FlagSpec, parseOptions } from "./flags.ts";
 * const specs: FlagSpec[] = [
 *   { name: "mode", type: "string", default: "grpc", help: "mode", implemented: true },
 * ];
 * const result = parseOptions<{ mode: string }>(
 *   specs,
 *   ["--mode=http-connect"],
 *   {},
 *   (o) => o.mode === "http-connect" ? ["--mode=http-connect is not implemented"] : [],
 * );
 * assert.ok(!("help" in result));
 * assert.equal(result.options.mode, "http-connect");
 * assert.deepEqual(result.notImplemented, ["--mode=http-connect is not implemented"]);
 * ```
 *
 * @param specs The flags the binary accepts.
 * @param args Command-line arguments without the program name.
 * @param env Environment for flags with an `env` fallback.
 * @param notes Extra not-implemented notes for the parsed options, listed after the flags' own.
 * @returns The options and notes on unimplemented/deprecated flags, or `{ help: true }`.
 * @throws {KnpError} `INVALID_FLAG` on unknown flags or unparsable values.
 */
export function parseOptions<T>(
  specs: readonly FlagSpec[],
  args: readonly string[],
  env: Record<string, string | undefined>,
  notes?: (options: T) => string[],
): ParsedOptions<T> | HelpRequested {
  const result = parseFlags(specs, args, { env });
  if ("help" in result) return result;
  const options = result.values as unknown as T;
  const notImplemented = [...result.notImplemented, ...(notes?.(options) ?? [])];
  return { options, notImplemented, deprecated: result.deprecated };
}

/**
 * Formats help text listing every flag that is neither hidden nor deprecated, sorted by name, in
 * pflag's layout: `--name type   help (default x)`, plus a note on flags knp does not implement.
 *
 * @param title First line of the help text, e.g. `"Usage of proxy-server:"`.
 * @param specs The flags to list.
 * @returns The help text, ending with a newline.
 */
export function formatHelp(title: string, specs: readonly FlagSpec[]): string {
  const visible = specs
    .filter((spec) => spec.hidden !== true && spec.deprecated === undefined)
    .toSorted((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const heads = visible.map((spec) => {
    const short = spec.short === undefined ? "    " : `-${spec.short}, `;
    const type = TYPE_NAMES[spec.type];
    return `  ${short}--${spec.name}${type === "" ? "" : ` ${type}`}`;
  });
  const width = Math.max(0, ...heads.map((head) => head.length));
  const lines = visible.map((spec, index) => {
    let text = spec.help;
    const shown = defaultText(spec);
    if (shown !== undefined) text += ` (default ${shown})`;
    if (spec.implemented !== true) {
      const reason = typeof spec.implemented === "string"
        ? spec.implemented
        : "not implemented yet";
      text += ` [knp: accepted but ${reason}; no effect]`;
    }
    return `${heads[index]!.padEnd(width)}   ${text}`;
  });
  return `${title}\n${lines.join("\n")}\n`;
}

/**
 * Throws if `path` does not exist, naming the flag. Like upstream, only "does not exist" fails;
 * other stat errors (such as missing read permission) are left to the code that opens the file.
 *
 * @param flag The flag name without dashes, e.g. `"server-cert"`.
 * @param path The file path given.
 * @throws {KnpError} `INVALID_FLAG` if nothing exists at `path`.
 */
export function requireExistingFile(flag: string, path: string): void {
  try {
    Deno.statSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw invalidFlag(`--${flag}: file "${path}" does not exist`);
    }
  }
}

/**
 * Checks a certificate/key flag pair the way upstream does: each one given must exist, and each
 * needs the other (the key is checked first).
 *
 * @param certFlag The certificate flag without dashes, e.g. `"agent-cert"`.
 * @param cert Its value.
 * @param keyFlag The key flag without dashes, e.g. `"agent-key"`.
 * @param key Its value.
 * @throws {KnpError} `INVALID_FLAG` naming the missing or nonexistent one.
 */
export function requireCertKeyPair(
  certFlag: string,
  cert: string,
  keyFlag: string,
  key: string,
): void {
  if (key !== "") {
    requireExistingFile(keyFlag, key);
    if (cert === "") {
      throw invalidFlag(`--${certFlag} must be set when --${keyFlag} is set ("${key}")`);
    }
  }
  if (cert !== "") {
    requireExistingFile(certFlag, cert);
    if (key === "") {
      throw invalidFlag(`--${keyFlag} must be set when --${certFlag} is set ("${cert}")`);
    }
  }
}

/**
 * Throws unless `value > 0` (`NaN` fails too).
 *
 * @param flag The flag name without dashes.
 * @param value Its value.
 * @throws {KnpError} `INVALID_FLAG`: `--flag: must be greater than 0, got value`.
 */
export function requirePositive(flag: string, value: number): void {
  if (!(value > 0)) throw invalidFlag(`--${flag}: must be greater than 0, got ${value}`);
}

/**
 * Throws if contention profiling is asked for without profiling, as upstream's binaries do.
 *
 * @param enableProfiling `--enable-profiling`.
 * @param enableContentionProfiling `--enable-contention-profiling`.
 * @throws {KnpError} `INVALID_FLAG` naming both flags.
 */
export function requireProfilingForContention(
  enableProfiling: boolean,
  enableContentionProfiling: boolean,
): void {
  if (enableContentionProfiling && !enableProfiling) {
    throw invalidFlag("--enable-contention-profiling requires --enable-profiling");
  }
}

/** Formats milliseconds as a Go duration for messages; non-finite values as they are. */
export function showDuration(ms: number): string {
  return Number.isFinite(ms) ? formatGoDuration(ms) : String(ms);
}

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
export const KNP_LOG_FORMAT_FLAG: FlagSpec = {
  name: "knp-log-format",
  type: "string",
  default: "json",
  help: "knp only: format of log lines on standard error, json or text.",
  implemented: true,
  check: (value) => (value === "json" || value === "text" ? undefined : `must be json or text`),
};
