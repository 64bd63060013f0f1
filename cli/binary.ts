// deno-lint-ignore-file no-console -- a binary's entry point writes to the terminal
/**
 * Shared plumbing of the two binaries' `main.ts`: parse or exit with one line, log notes about
 * accepted-but-unimplemented flags, JSON-lines logging, a last-resort handler so a stray async
 * error is logged instead of killing every tunnel, and upstream's two-signal shutdown.
 *
 * @module
 */

import { errorMessage } from "@knp/core/errors";
import { silenceGrpcLogs } from "@knp/transport/grpc_stream";
import { jsonLogger, levelFromVerbosity, type Logger } from "@knp/core/log";

/** What every binary's parse step returns. */
export interface ParsedCli<O> {
  options: O;
  notImplemented: string[];
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
  const log = jsonLogger({ level: levelFromVerbosity(options.v), format: options.knpLogFormat });
  for (const note of parsed.notImplemented) log.warn(note);
  for (const note of parsed.deprecated) log.warn(note);
  silenceGrpcLogs();
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    log.error("unhandled async error (kept running)", { error: errorMessage(event.reason) });
  });
  globalThis.addEventListener("error", (event) => {
    event.preventDefault();
    log.error("uncaught error (kept running)", { error: errorMessage(event.error) });
  });
  return { options, log };
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
