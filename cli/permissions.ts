/**
 * Least-privilege Deno permissions for knp's binaries: each binary computes, from its own command
 * line, the list of {@linkcode PermissionNeed}s it has (what it binds, reads, writes and which
 * environment variables it reads), and this module turns that list into `deno run` flags, checks it
 * against the running process's permissions, and explains a `NotCapable` error as the flag to add.
 *
 * Library code: nothing here prints or exits (see `binary.ts` for that).
 *
 * @module
 */

import { type FlagSpec, parseFlags } from "./flags.ts";

/** The kinds of permission knp's binaries use. */
export type PermissionKind = "net" | "read" | "write" | "env";

/** One permission a binary needs, and why. */
export interface PermissionNeed {
  /** Which permission: net, read, write or env. */
  readonly kind: PermissionKind;
  /**
   * What to allow: a `host:port`, a bare host, `unix:/path`, a file path, or an environment
   * variable. Absent: the whole kind (e.g. plain `--allow-net`).
   */
  readonly value?: string;
  /** What needs it, e.g. `"--uds-name"` or `"grpc-js"`; the start of the error line. */
  readonly reason: string;
}

/**
 * The environment variables grpc-js reads when it is imported (measured under Deno 2.9.6: each
 * missing one fails the import with `NotCapable`).
 */
export const GRPC_JS_ENV: readonly string[] = [
  "GRPC_NODE_VERBOSITY",
  "GRPC_NODE_TRACE",
  "GRPC_VERBOSITY",
  "GRPC_TRACE",
  "GRPC_SSL_CIPHER_SUITES",
  "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
  "GRPC_EXPERIMENTAL_ENABLE_OUTLIER_DETECTION",
  "GRPC_NODE_DEBUG_SEND_ERROR_DETAILS",
  "GRPC_NODE_USE_ALTERNATIVE_RESOLVER",
  "grpc_proxy",
  "http_proxy",
  "https_proxy",
  "no_grpc_proxy",
  "no_proxy",
];

/** The needs every binary has: grpc-js's environment variables. */
export function grpcJsNeeds(): PermissionNeed[] {
  return GRPC_JS_ENV.map((value) => ({ kind: "env", value, reason: "grpc-js (when it loads)" }));
}

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

/**
 * The net needs of a TCP listener on `host:port` (`host` empty: `fallback`). A host name (not an
 * IP literal) also needs the bare name, which Deno checks when it resolves it.
 *
 * @param reason The flag that asks for the listener, e.g. `"--agent-port"`.
 * @param host The bind address flag's value.
 * @param port The port (0: any free port, which Deno checks as port 0).
 * @param fallback The address used when `host` is empty, e.g. `"0.0.0.0"`.
 */
export function listenNeeds(
  reason: string,
  host: string,
  port: number,
  fallback: string,
): PermissionNeed[] {
  const h = host === "" ? fallback : host.replace(/^\[(.*)\]$/, "$1");
  const isIp = IPV4.test(h) || h.includes(":");
  const hostPort = h.includes(":") ? `[${h}]:${port}` : `${h}:${port}`;
  const needs: PermissionNeed[] = [{ kind: "net", value: hostPort, reason }];
  if (!isIp) needs.push({ kind: "net", value: h, reason });
  return needs;
}

/** Read needs of file flags: one per non-empty path, the reason being the flag. */
export function fileNeeds(files: Record<string, string>): PermissionNeed[] {
  return Object.entries(files)
    .filter(([, path]) => path !== "")
    .map(([flag, path]) => ({ kind: "read", value: path, reason: `--${flag}` }));
}

/**
 * Env needs of the flags with an environment fallback that are not given on the command line
 * (the parser reads the variable only then).
 *
 * @param specs The binary's flags.
 * @param set Long names of the flags given (from `parseFlags`).
 */
export function flagEnvNeeds(
  specs: readonly FlagSpec[],
  set: ReadonlySet<string>,
): PermissionNeed[] {
  return specs
    .filter((spec) => spec.env !== undefined && spec.alias === undefined && !set.has(spec.name))
    .map((spec) => ({
      kind: "env",
      value: spec.env!,
      reason: `the default of --${spec.name} ($${spec.env})`,
    }));
}

/**
 * Reads the environment variables of `specs`' env fallbacks that this process may read (the
 * others are left out; the permission check reports them first).
 */
export function readFlagEnv(specs: readonly FlagSpec[]): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = {};
  for (const spec of specs) {
    if (spec.env === undefined) continue;
    const state = Deno.permissions.querySync({ name: "env", variable: spec.env }).state;
    if (state === "granted") env[spec.env] = Deno.env.get(spec.env);
  }
  return env;
}

/** What a binary's permission function found: the needs, or why there are none. */
export type PermissionPlan =
  | { readonly needs: PermissionNeed[]; readonly print: boolean }
  | { readonly needs?: undefined; readonly reason: "help" | "invalid" };

/**
 * Parses `args` against `specs` (without the environment) and computes the needs with `compute`;
 * `--knp-print-permissions` sets `print`. Unparsable arguments and `--help` give no needs (the
 * binary then reports them as usual).
 */
export function permissionPlan<T>(
  specs: readonly FlagSpec[],
  args: readonly string[],
  compute: (options: T) => PermissionNeed[],
): PermissionPlan {
  let parsed;
  try {
    parsed = parseFlags(specs, args);
  } catch {
    return { reason: "invalid" };
  }
  if ("help" in parsed) return { reason: "help" };
  const options = parsed.values as unknown as T;
  let needs: PermissionNeed[];
  try {
    needs = [...compute(options), ...flagEnvNeeds(specs, parsed.set)];
  } catch {
    return { reason: "invalid" };
  }
  return { needs, print: parsed.values.knpPrintPermissions === true };
}

const KIND_ORDER: readonly PermissionKind[] = ["env", "net", "read", "write"];

/**
 * The `deno run` flags granting exactly `needs`: one `--allow-<kind>=a,b` per kind, values in
 * first-seen order without duplicates; a need without a value gives the plain `--allow-<kind>`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * assert.deepEqual(
 *   permissionFlags([
 *     { kind: "write", value: "/run/k.sock", reason: "--uds-name" },
 *     { kind: "net", value: "unix:/run/k.sock", reason: "--uds-name" },
 *     { kind: "net", value: "0.0.0.0:8091", reason: "--agent-port" },
 *   ]),
 *   ["--allow-net=unix:/run/k.sock,0.0.0.0:8091", "--allow-write=/run/k.sock"],
 * );
 * ```
 */
export function permissionFlags(needs: readonly PermissionNeed[]): string[] {
  const flags: string[] = [];
  for (const kind of KIND_ORDER) {
    const ofKind = needs.filter((need) => need.kind === kind);
    if (ofKind.length === 0) continue;
    if (ofKind.some((need) => need.value === undefined)) {
      flags.push(`--allow-${kind}`);
      continue;
    }
    const values = [...new Set(ofKind.map((need) => need.value!))];
    flags.push(`--allow-${kind}=${values.join(",")}`);
  }
  return flags;
}

/** The Deno permission descriptor of a need. */
export function permissionDescriptor(need: PermissionNeed): Deno.PermissionDescriptor {
  switch (need.kind) {
    case "net":
      return need.value === undefined ? { name: "net" } : { name: "net", host: need.value };
    case "read":
      return need.value === undefined ? { name: "read" } : { name: "read", path: need.value };
    case "write":
      return need.value === undefined ? { name: "write" } : { name: "write", path: need.value };
    case "env":
      return need.value === undefined ? { name: "env" } : { name: "env", variable: need.value };
  }
}

/** The needs this process has not been granted (asked with `Deno.permissions.querySync`). */
export function missingPermissions(needs: readonly PermissionNeed[]): PermissionNeed[] {
  return needs.filter((need) =>
    Deno.permissions.querySync(permissionDescriptor(need)).state !== "granted"
  );
}

/**
 * One line saying what to add for the missing needs, e.g.
 * `proxy-server: --uds-name needs --allow-write=/run/k.sock`. It names every missing value of the
 * first missing need's reason and kind; if more is missing, it says where the full set is.
 *
 * @param name The binary, e.g. `"proxy-server"`.
 * @param missing Non-empty list of missing needs (from {@linkcode missingPermissions}).
 */
export function missingPermissionLine(name: string, missing: readonly PermissionNeed[]): string {
  const first = missing[0]!;
  const group = missing.filter((need) => need.reason === first.reason && need.kind === first.kind);
  const [flag] = permissionFlags(group);
  const more = missing.length > group.length
    ? ` (and more: --knp-print-permissions prints the whole set)`
    : "";
  return `${name}: ${first.reason} needs ${flag}${more}`;
}

const NOT_CAPABLE = /Requires (net|read|write|env|run|sys|ffi|import) access to "([^"]*)"/;

/**
 * Explains a `NotCapable` error (found in `err` or its `cause` chain, or as Deno's message in a
 * wrapped error) as one line naming the flag to add; `undefined` if `err` is no permission error.
 *
 * @param name The binary, e.g. `"proxy-agent"`.
 * @param err The error that ended the start.
 * @param needs The binary's needs, to name the flag that asked for the denied value.
 */
export function notCapableLine(
  name: string,
  err: unknown,
  needs: readonly PermissionNeed[],
): string | undefined {
  for (let e: unknown = err, depth = 0; e !== undefined && depth < 8; depth++) {
    const message = e instanceof Error ? e.message : String(e);
    const match = NOT_CAPABLE.exec(message);
    if (match !== null || e instanceof Deno.errors.NotCapable) {
      if (match === null) return `${name}: missing permission: ${message}`;
      const [, kind, value] = match;
      const need = needs.find((n) => n.kind === kind && n.value === value);
      return `${name}: ${need?.reason ?? "the process"} needs --allow-${kind}=${value}`;
    }
    e = e instanceof Error ? e.cause : undefined;
  }
  return undefined;
}
