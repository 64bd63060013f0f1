/**
 * `proxy-server`: the knp proxy server binary. Accepts upstream's flags (see `--help`).
 *
 * @module
 */

import { onSignals, parseOrExit, readPem } from "../internal/cli.ts";
import { errorMessage } from "../internal/errors.ts";
import { parseProxyStrategies } from "./backend_manager.ts";
import {
  parseServerOptions,
  serverHelp,
  type ServerOptions,
  validateServerOptions,
} from "./options.ts";
import { startProxyServer } from "./server.ts";

/** Runs the server until signalled. */
export async function main(args: string[]): Promise<void> {
  const { options: o, log } = parseOrExit<ServerOptions>(
    "proxy-server",
    () => parseServerOptions(args, Deno.env.toObject()),
    validateServerOptions,
    serverHelp,
  );
  let handle;
  try {
    handle = await startProxyServer({
      mode: o.mode === "http-connect" ? "http-connect" : "grpc",
      serverId: o.serverId,
      serverCount: o.serverCount,
      strategies: parseProxyStrategies(o.proxyStrategies),
      backendDialTimeoutMs: o.backendDialTimeout,
      udsName: o.udsName || undefined,
      deleteExistingUdsFile: o.deleteExistingUdsFile,
      serverBindAddress: o.serverBindAddress,
      serverPort: o.serverPort,
      serverTls: o.udsName ? undefined : {
        cert: readPem(o.serverCert),
        key: readPem(o.serverKey),
        ca: readPem(o.serverCaCert),
      },
      agentBindAddress: o.agentBindAddress,
      agentPort: o.agentPort,
      clusterTls: {
        cert: readPem(o.clusterCert),
        key: readPem(o.clusterKey),
        ca: readPem(o.clusterCaCert),
      },
      keepaliveTimeMs: o.keepaliveTime,
      frontendKeepaliveTimeMs: o.frontendKeepaliveTime,
      healthBindAddress: o.healthBindAddress,
      healthPort: o.healthPort,
      adminBindAddress: o.adminBindAddress,
      adminPort: o.adminPort,
      logger: log,
    });
  } catch (err) {
    log.error("proxy server failed to start", { error: errorMessage(err) });
    Deno.exit(1);
  }
  const server = handle;
  onSignals(async () => {
    const graceful = o.gracefulShutdownTimeout > 0;
    log.info("shutting down", { graceful, timeout: o.gracefulShutdownTimeout });
    const done = server.close(graceful);
    const timer = graceful
      ? setTimeout(() => server.close(false).finally(() => Deno.exit(0)), o.gracefulShutdownTimeout)
      : undefined;
    await done;
    clearTimeout(timer);
    Deno.exit(0);
  }, () => Deno.exit(1));
}

if (import.meta.main) await main(Deno.args);
