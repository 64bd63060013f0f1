// deno-lint-ignore-file no-console -- a binary's entry point writes to the terminal
/**
 * Shared plumbing of the two binaries' `main.ts`: the permission check (or `--knp-print-permissions`),
 * parse or exit with one line, log notes about accepted-but-unimplemented flags, JSON-lines
 * logging through LogTape (`log_tape.ts`), a last-resort handler so a stray async error is logged
 * instead of killing every tunnel, and upstream's two-signal shutdown.
 *
 * Nothing here imports grpc-js: it reads environment variables when it loads, so a binary checks
 * its permissions first and imports the rest afterwards.
 *
 * @module
 */

import { errorMessage } from "@knp/core/errors";
import type { Logger } from "@knp/core/log";
import { configureBinaryLogging } from "./log_tape.ts";
import {
  missingPermissionLine,
  missingPermissions,
  notCapableLine,
  permissionFlags,
  type PermissionNeed,
  type PermissionPlan,
} from "./permissions.ts";

/** What every binary's parse step returns. */
export interface ParsedCli<O> {
  /** The parsed options. */
  options: O;
  /** One line per given flag knp accepts but does not implement. */
  notImplemented: string[];
  /** One line per deprecated flag that was given. */
  deprecated: string[];
}

/**
 * Parses and validates, or exits: `--help` prints help and exits 0; an invalid flag prints one
 * line naming it and exits 1.
 */
export function parseOrExit<O extends { v: number; knpLogFormat: "json" | "text" }>(
  name: string,
  parse: () => ParsedCli<O> | { help: true },
  validate: (o: O) => unknown,
  help: () => string,
): { options: O; log: Logger } {
  let parsed: ParsedCli<O> | { help: true };
  try {
    parsed = parse();
    if (!("help" in parsed)) validate(parsed.options);
  } catch (err) {
    console.error(`${name}: ${errorMessage(err)}`);
    Deno.exit(1);
  }
  if ("help" in parsed) {
    console.log(help());
    Deno.exit(0);
  }
  const { options } = parsed;
  const log = configureBinaryLogging({
    binary: name.replace(/^proxy-/, ""),
    v: options.v,
    format: options.knpLogFormat,
  });
  for (const note of parsed.notImplemented) log.warn(note);
  for (const note of parsed.deprecated) log.warn(note);
  return { options, log };
}

/**
 * Installs the last-resort handler that logs a stray async error instead of ending the process
 * (which would cut every tunnel). Logged as a warning: the process keeps serving, and there is
 * nothing for an operator to do but report it (ERROR is kept for what needs an operator). Binaries call it only once they have started: until then an
 * error ends the process with exit code 1, so a start that cannot succeed is never hidden.
 */
export function keepRunningOnStrayErrors(log: Logger): void {
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    log.warn("unhandled async error (kept running)", { error: errorMessage(event.reason) });
  });
  globalThis.addEventListener("error", (event) => {
    event.preventDefault();
    log.warn("uncaught error (kept running)", { error: errorMessage(event.error) });
  });
}

/** Calls `first` on the first SIGINT/SIGTERM and `second` on every later one. */
export function onSignals(first: () => void, second: () => void): void {
  let count = 0;
  const handler = () => {
    count++;
    if (count === 1) first();
    else second();
  };
  Deno.addSignalListener("SIGINT", handler);
  Deno.addSignalListener("SIGTERM", handler);
}

/** Reads a PEM file, or undefined for an empty path. */
export function readPem(path: string): Uint8Array | undefined {
  return path === "" ? undefined : Deno.readFileSync(path);
}

/**
 * Acts on a binary's permission plan before anything else runs: with `--knp-print-permissions`
 * prints the `deno run` flags one per line (the permissions, then `runFlags`) and exits 0; with a
 * permission missing prints one line naming the flag to add and exits 1. Returns the needs
 * otherwise (none for `--help` or invalid arguments, which the parse step reports).
 */
export function checkPermissionsOrExit(
  name: string,
  plan: PermissionPlan,
  runFlags: readonly string[] = [],
): PermissionNeed[] {
  if (plan.needs === undefined) return [];
  if (plan.print) {
    console.log([...permissionFlags(plan.needs), ...runFlags].join("\n"));
    Deno.exit(0);
  }
  const missing = missingPermissions(plan.needs);
  if (missing.length > 0) {
    console.error(missingPermissionLine(name, missing));
    Deno.exit(1);
  }
  return plan.needs;
}

/**
 * Ends the process because starting failed: a permission error as one line naming the flag to add,
 * anything else through `log`. Exits 1.
 */
export function exitOnStartError(
  name: string,
  err: unknown,
  needs: readonly PermissionNeed[],
  log: Logger,
  what: string,
): never {
  const line = notCapableLine(name, err, needs);
  if (line !== undefined) console.error(line);
  else log.error(what, { error: errorMessage(err) });
  Deno.exit(1);
}

/**
 * Runs `deno run <flags> <entry> <args>` (the `deno` on PATH) with this process's stdio, forwards
 * SIGINT/SIGTERM to it, and exits with its exit code. This is how `deno task server`/`agent` give
 * the binary exactly the permissions its arguments need; the launcher itself needs only
 * `--allow-run=deno`.
 *
 * @param entry Path of the binary's `main.ts`.
 * @param flags The permission flags (from the binary's permission function).
 * @param args The binary's arguments.
 */
export async function launchWithPermissions(
  entry: string,
  flags: readonly string[],
  args: readonly string[],
): Promise<never> {
  const child = new Deno.Command("deno", {
    args: ["run", "--no-prompt", ...flags, entry, ...args],
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  const forward = (signal: Deno.Signal) => () => {
    try {
      child.kill(signal);
    } catch { /* already gone */ }
  };
  Deno.addSignalListener("SIGINT", forward("SIGINT"));
  Deno.addSignalListener("SIGTERM", forward("SIGTERM"));
  const status = await child.status;
  Deno.exit(status.code);
}
