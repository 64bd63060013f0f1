/**
 * Fuzz target `flags`: the pflag-style command-line parser (`cli/flags.ts`, with the value
 * syntaxes of `cli/flag_values.ts` and `cli/duration.ts`) as the binaries drive it:
 * `parseServerOptions` and `parseAgentOptions` (with their flag checks), plus the server's
 * `parseLeaseLabels`.
 *
 * Inputs: argv built from the real flag names (long, shorthand, `=value` or separate value, bare
 * bools, `--`, `-h`, unknown and single-dash names) with values typical of each flag type and
 * edge values (huge integers, Go durations that overflow, `0x`/`0o`/`_` forms, CSV quoting,
 * `[a,b]`), mutated as text; random environment values for the `env` fallbacks.
 *
 * Invariants: parsing returns `{ help: true }` or options with string-list notes, or throws a
 * `KnpError` with code `INVALID_FLAG`; nothing else is thrown.
 *
 * @module
 */
import { KnpError } from "@knp/core/errors";
import type { FlagSpec } from "@knp/cli/flags";
import { parseLeaseLabels, parseServerOptions, SERVER_FLAGS } from "../../server/options.ts";
import { AGENT_FLAGS, parseAgentOptions } from "../../agent/options.ts";
import { mutate } from "../mutate.ts";
import type { Rng } from "../rng.ts";
import { invariant, type Target, unexpected } from "../target.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const SPECS: readonly FlagSpec[] = [...SERVER_FLAGS, ...AGENT_FLAGS];

const VALUES: Record<string, readonly string[]> = {
  bool: ["true", "false", "1", "0", "t", "F", "TRUE", "yes", ""],
  int: [
    "0",
    "8090",
    "-1",
    "0x1f",
    "0o17",
    "017",
    "0b101",
    "1_000",
    "_1",
    "9007199254740993",
    "99999999999999999999999",
    "+5",
    "--5",
    "0x",
    "1e3",
    " 1",
  ],
  float: ["0", "1.5", "-2", "1e40", "NaN", "Inf", "-Inf", "0x1p-2", "1_0.5", ".", "3.4e38"],
  duration: [
    "0",
    "1s",
    "1h0m0s",
    "100ms",
    "-5m",
    "1.5h",
    "9223372036854775807ns",
    "2562048h",
    "9999999999h",
    "1us",
    "1µs",
    "1",
    ".s",
    "1d",
    "",
    "+0",
    "1h-1m",
  ],
  string: [
    "",
    "x",
    "/tmp/knp.sock",
    "json",
    "text",
    "default,destHost",
    "é",
    "a=b,c=d",
    "=",
    "host=node1&ipv4=10.0.0.1",
    "a;b",
    "%zz",
    "k in (a,b)",
    "!k",
    "k!=v,k2=v2",
    "((",
    "VersionTLS12",
  ],
  stringSlice: ["", "a,b", "[]", "[a,b]", '"a,b",c', '"unterminated', "a,,b", '""', "h2,http/1.1"],
};
const ODD_ARGS = [
  "--",
  "-",
  "-h",
  "--help",
  "--help=false",
  "--help=maybe",
  "---x",
  "--=x",
  "-vv",
  "-v=",
  "-v9",
  "-x",
  "positional",
  "--unknown-flag",
  "-server-port=1",
  "--v=2",
];

function flagArgs(rng: Rng, spec: FlagSpec): string[] {
  const value = rng.chance(0.8) ? rng.pick(VALUES[spec.type] ?? [""]) : rng.pick(VALUES.string!);
  const name = spec.short !== undefined && rng.chance(0.3) ? `-${spec.short}` : `--${spec.name}`;
  if (spec.type === "bool") return rng.chance(0.5) ? [name] : [`${name}=${value}`];
  return rng.chance(0.5) ? [`${name}=${value}`] : [name, value];
}

function mutateText(rng: Rng, text: string): string {
  return decoder.decode(mutate(rng, encoder.encode(text), encoder.encode(rng.pick(ODD_ARGS)), 3));
}

/** One input: an argv and an environment. */
export interface FlagsInput {
  args: string[];
  env: Record<string, string>;
}

function generate(rng: Rng): FlagsInput {
  const args: string[] = [];
  const n = rng.size(12);
  for (let i = 0; i < n; i++) {
    if (rng.chance(0.03)) args.push(rng.pick(ODD_ARGS));
    else args.push(...flagArgs(rng, rng.pick(SPECS)));
  }
  if (rng.chance(0.2) && args.length > 0) {
    const i = rng.int(args.length);
    args[i] = mutateText(rng, args[i]!);
  }
  const env: Record<string, string> = {};
  if (rng.chance(0.2)) env.PROXY_SERVER_ID = rng.pick(VALUES.string!);
  if (rng.chance(0.2)) env.PROXY_AGENT_ID = rng.pick(VALUES.string!);
  return { args, env };
}

function checkResult(what: string, parse: () => unknown): void {
  let result: unknown;
  try {
    result = parse();
  } catch (err) {
    if (err instanceof KnpError && err.code === "INVALID_FLAG") return;
    throw unexpected(what, err);
  }
  invariant(typeof result === "object" && result !== null, `${what} returned no object`);
  if ("help" in result) return invariant(result.help === true, `${what}: help is not true`);
  const r = result as { options?: unknown; notImplemented?: unknown; deprecated?: unknown };
  invariant(typeof r.options === "object" && r.options !== null, `${what} returned no options`);
  for (const notes of [r.notImplemented, r.deprecated]) {
    const ok = Array.isArray(notes) && notes.every((s) => typeof s === "string");
    invariant(ok, `${what} returned notes that are not strings`);
  }
}

function check(input: FlagsInput): void {
  checkResult("parseServerOptions", () => parseServerOptions(input.args, input.env));
  checkResult("parseAgentOptions", () => parseAgentOptions(input.args, input.env));
  for (const arg of input.args) checkResult("parseLeaseLabels", () => parseLabels(arg));
}

function parseLabels(text: string): object {
  return { options: parseLeaseLabels(text), notImplemented: [], deprecated: [] };
}

/** The `flags` target. */
export const flagsTarget: Target<FlagsInput> = {
  name: "flags",
  generate,
  check,
  toJson: (i) => i,
  fromJson(json) {
    const j = json as Partial<FlagsInput>;
    if (!Array.isArray(j.args) || typeof j.env !== "object" || j.env === null) {
      throw new TypeError("expected { args, env }");
    }
    return { args: j.args.map(String), env: { ...j.env } };
  },
};
