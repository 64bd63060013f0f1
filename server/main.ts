/**
 * `proxy-server`: the knp proxy server binary. Accepts upstream's flags (see `--help`).
 *
 * @module
 */

import { onSignals, parseOrExit } from "@knp/cli/binary";
import { errorMessage } from "@knp/core/errors";
import { TlsFiles, tlsPolicyFromFlags } from "@knp/transport/tls_files";
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
    // Both TLS listeners reload their files while running: new handshakes use the new material,
    // established connections keep theirs; a broken file keeps the previous one (and is logged).
    const serverTls = o.udsName ? undefined : new TlsFiles({
      cert: o.serverCert,
      key: o.serverKey,
      ca: o.serverCaCert,
      logger: log.with({ tls: "server" }),
    });
    const clusterTls = new TlsFiles({
      cert: o.clusterCert,
      key: o.clusterKey,
      ca: o.clusterCaCert,
      logger: log.with({ tls: "cluster" }),
    });
    handle = await startProxyServer({
      mode: o.mode === "http-connect" ? "http-connect" : "grpc",
      serverId: o.serverId,
      serverCount: o.serverCount,
      strategies: parseProxyStrategies(o.proxyStrategies),
      backendDialTimeoutMs: o.backendDialTimeout,
      maxPendingDials: o.knpMaxPendingDials,
      websocketPort: o.knpWebsocketPort > 0 ? o.knpWebsocketPort : undefined,
      udsName: o.udsName || undefined,
      deleteExistingUdsFile: o.deleteExistingUdsFile,
      serverBindAddress: o.serverBindAddress,
      serverPort: o.serverPort,
      serverTls,
      agentBindAddress: o.agentBindAddress,
      agentPort: o.agentPort,
      clusterTls,
      tlsPolicy: tlsPolicyFromFlags(o.tlsMinVersion, o.cipherSuites),
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
