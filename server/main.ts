/**
 * `proxy-server`: the knp proxy server binary. Accepts upstream's flags (see `--help`).
 *
 * It first checks that the process has the permissions its flags need (see `permissions.ts`;
 * `--knp-print-permissions` prints them) and ends with one line naming the missing flag if not.
 * Only then does it import the server, since grpc-js reads environment variables when it loads.
 *
 * @module
 */

import { checkPermissionsOrExit, parseOrExit } from "@knp/cli/binary";
import { readFlagEnv } from "@knp/cli/permissions";
import {
  parseServerOptions,
  SERVER_FLAGS,
  serverHelp,
  type ServerOptions,
  validateServerOptions,
} from "./options.ts";
import { SERVER_V8_FLAGS, serverPermissionPlan } from "./permissions.ts";

/** Runs the server until signalled. */
export async function main(args: string[]): Promise<void> {
  const needs = checkPermissionsOrExit("proxy-server", serverPermissionPlan(args), [
    SERVER_V8_FLAGS,
  ]);
  const { options, log } = parseOrExit<ServerOptions>(
    "proxy-server",
    () => parseServerOptions(args, readFlagEnv(SERVER_FLAGS)),
    validateServerOptions,
    serverHelp,
  );
  const { runServer } = await import("./run_server.ts");
  await runServer(options, log, needs);
}

if (import.meta.main) await main(Deno.args);
