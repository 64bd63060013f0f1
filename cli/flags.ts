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
import { parseFlagValue, parseGoBool } from "./flag_values.ts";

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
  /** Always true: print help and exit. */
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
  const state = new FlagParseState(specs);
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
    const outcome = arg.startsWith("--")
      ? state.long(arg, args, i)
      : state.shorthands(arg, args, i);
    if (outcome === "help") return { help: true };
    i = outcome;
  }
  state.applyEnv(options.env ?? {});
  return state.result();
}

/** The state of one {@linkcode parseFlags} call. */
class FlagParseState {
  readonly #specs: readonly FlagSpec[];
  readonly #byName = new Map<string, FlagSpec>();
  readonly #byShort = new Map<string, FlagSpec>();
  readonly #values: Record<string, FlagValue> = {};
  readonly #set = new Set<string>();
  readonly #given: FlagSpec[] = [];
  readonly #deprecated: string[] = [];

  constructor(specs: readonly FlagSpec[]) {
    this.#specs = specs;
    for (const spec of specs) {
      if (this.#byName.has(spec.name)) {
        throw new TypeError(`Flag "--${spec.name}" is defined twice`);
      }
      this.#byName.set(spec.name, spec);
      if (spec.short !== undefined) this.#byShort.set(spec.short, spec);
    }
    for (const spec of specs) {
      if (spec.alias !== undefined && !this.#byName.has(spec.alias)) {
        throw new TypeError(`Flag "--${spec.name}" is an alias of unknown flag "--${spec.alias}"`);
      }
    }
    for (const spec of specs) {
      if (spec.alias === undefined) this.#values[camelCaseFlagName(spec.name)] = defaultOf(spec);
    }
  }

  #target(spec: FlagSpec): FlagSpec {
    return spec.alias === undefined ? spec : this.#byName.get(spec.alias)!;
  }

  /** Sets a flag from its text, as written on the command line (`shown`). */
  #assign(spec: FlagSpec, text: string, shown: string): void {
    const target = this.#target(spec);
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
    if (target.type === "stringSlice" && this.#set.has(target.name)) {
      this.#values[key] = [...(this.#values[key] as string[]), ...(value as string[])];
    } else {
      this.#values[key] = value;
    }
    if (!this.#set.has(spec.name)) {
      this.#given.push(spec);
      if (spec.deprecated !== undefined) {
        this.#deprecated.push(`flag --${spec.name} has been deprecated: ${spec.deprecated}`);
      }
    }
    this.#set.add(spec.name);
    this.#set.add(target.name);
  }

  /** Handles `--name[=value]` at `args[i - 1]`; returns the next index, or "help". */
  long(arg: string, args: readonly string[], i: number): number | "help" {
    const body = arg.slice(2);
    if (body.startsWith("-") || body.startsWith("=")) {
      throw invalidFlag(`bad flag syntax: ${arg}`);
    }
    const eq = body.indexOf("=");
    const name = eq === -1 ? body : body.slice(0, eq);
    let text: string | undefined = eq === -1 ? undefined : body.slice(eq + 1);
    const spec = this.#byName.get(name);
    if (spec === undefined) {
      if (name === "help") {
        return text === undefined || parseBoolOrThrow(text, "--help") ? "help" : i;
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
    this.#assign(spec, text, `--${name}`);
    return i;
  }

  /** Handles a run of shorthands (`-v=4`, `-v 4`, `-v4`, `-h`); returns the next index, or "help". */
  shorthands(arg: string, args: readonly string[], i: number): number | "help" {
    let rest = arg.slice(1);
    while (rest.length > 0) {
      const ch = rest[0]!;
      const spec = this.#byShort.get(ch);
      if (spec === undefined) {
        if (ch === "h") return "help";
        throw invalidFlag(`unknown shorthand flag: '${ch}' in ${arg}`);
      }
      let text: string;
      if (rest[1] === "=") {
        text = rest.slice(2);
        rest = "";
      } else if (spec.type === "bool") {
        text = "true";
        rest = rest.slice(1);
      } else if (rest.length > 1) {
        text = rest.slice(1);
        rest = "";
      } else if (i < args.length) {
        text = args[i]!;
        i++;
        rest = "";
      } else {
        throw invalidFlag(`flag needs an argument: '${ch}' in ${arg}`);
      }
      this.#assign(spec, text, `-${ch}`);
    }
    return i;
  }

  /** Fills flags not given on the command line from their environment variables. */
  applyEnv(env: Record<string, string | undefined>): void {
    for (const spec of this.#specs) {
      if (spec.env === undefined || spec.alias !== undefined || this.#set.has(spec.name)) continue;
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
      this.#values[camelCaseFlagName(spec.name)] = value;
    }
  }

  result(): ParsedFlags {
    const notImplemented: string[] = [];
    for (const spec of this.#given) {
      if (spec.implemented === true) continue;
      const target = this.#target(spec);
      const current = this.#values[camelCaseFlagName(target.name)];
      if (typeof target.default === "function" || !sameValue(current, target.default)) {
        notImplemented.push(notImplementedMessage(spec));
      }
    }
    return {
      values: this.#values,
      set: this.#set,
      notImplemented,
      deprecated: this.#deprecated,
    };
  }
}

function parseBoolOrThrow(text: string, shown: string): boolean {
  try {
    return parseGoBool(text);
  } catch (err) {
    throw invalidFlag(`invalid argument "${text}" for "${shown}" flag: ${describe(err)}`);
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
