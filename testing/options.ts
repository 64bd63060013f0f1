/**
 * Shared helpers of the options tests (`server/options_test.ts`, `agent/options_test.ts`,
 * `internal/flags_test.ts`). Not part of the library.
 *
 * @module
 */

import assert from "node:assert/strict";
import { KnpError } from "@knp/core/errors";
import type { ParsedOptions } from "@knp/cli/flags";

/** A random (version 4) UUID, as `crypto.randomUUID()` makes for `--server-id`/`--agent-id`. */
export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** The values of klog's flags when none is given (upstream's binaries set `-v` to 4). */
export const KLOG_DEFAULTS = {
  logDir: "",
  logFile: "",
  logFileMaxSize: 1800,
  logtostderr: true,
  alsologtostderr: false,
  legacyStderrThresholdBehavior: true,
  v: 4,
  addDirHeader: false,
  skipHeaders: false,
  oneOutput: false,
  skipLogHeaders: false,
  stderrthreshold: "ERROR",
  alsologtostderrthreshold: "INFO",
  vmodule: "",
  logBacktraceAt: "",
};

/**
 * Makes a temporary directory (removed when the test module unloads) with one empty file per
 * entry of `names`, standing in for certificates and other files the options must find.
 *
 * @param prefix Prefix of the directory name.
 * @param names File names by key, e.g. `{ CERT: "server.crt" }`.
 * @returns The file paths by the same keys, plus `MISSING`: a path in the directory with no file.
 */
export function emptyFiles<K extends string>(
  prefix: string,
  names: Record<K, string>,
): Record<K | "MISSING", string> {
  const dir = Deno.makeTempDirSync({ prefix });
  globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
  const paths = { MISSING: `${dir}/missing.pem` } as Record<K | "MISSING", string>;
  for (const [key, name] of Object.entries(names) as [K, string][]) {
    paths[key] = `${dir}/${name}`;
    Deno.writeTextFileSync(paths[key], "");
  }
  return paths;
}

/**
 * Test helpers bound to one binary's parse and validate functions.
 *
 * @param parseOptions The binary's parser, e.g. `parseServerOptions`.
 * @param validate The binary's validation, e.g. `validateServerOptions`.
 * @returns `parse` (fails on a help result), `options` (the parsed options only) and
 * `assertInvalid` (validation fails with a one-line `INVALID_FLAG` error naming `--flag`).
 */
export function optionsTester<T>(
  parseOptions: (
    args: readonly string[],
    env: Record<string, string | undefined>,
  ) => ParsedOptions<T> | { help: true },
  validate: (options: T) => unknown,
) {
  function parse(args: string[], env: Record<string, string | undefined> = {}): ParsedOptions<T> {
    const result = parseOptions(args, env);
    assert.ok(!("help" in result), "unexpected help result");
    return result;
  }
  function options(args: string[]): T {
    return parse(args).options;
  }
  function assertInvalid(args: string[], flag: string, message?: RegExp): void {
    assert.throws(() => validate(options(args)), (err: unknown) => {
      assert.ok(err instanceof KnpError, `expected KnpError, got ${err}`);
      assert.equal(err.code, "INVALID_FLAG");
      assert.ok(!err.message.includes("\n"), "message must be one line");
      assert.ok(err.message.includes(`--${flag}`), `"${err.message}" should name --${flag}`);
      if (message !== undefined) assert.match(err.message, message);
      return true;
    }, args.join(" "));
  }
  return { parse, options, assertInvalid };
}
