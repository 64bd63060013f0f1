/**
 * `startProxyServer`: binds the frontend (gRPC over a UDS or over TCP with mTLS), the agent
 * service (gRPC over TLS, mTLS when a CA is given) and the health/admin HTTP servers around one
 * {@linkcode ProxyServer} core.
 *
 * @module
 */

import type { TlsMaterial, TlsPolicy, TlsSource } from "@knp/transport/grpc_server";
import { childLogger, type Logger, nullLogger } from "@knp/core/log";
import { ProxyServer, type ProxyServerOptions } from "./proxy_server.ts";
import { denySelf, type SelfDestinationConfig } from "./destination_guard.ts";
import type { OwnListener } from "@knp/core/self_deny_rules";
import type { AgentGate } from "./agent_handshake.ts";
import { serverHealthHandler } from "./health.ts";
import { ServerMetrics } from "./metrics.ts";
import { logCorePackets } from "./dial_trace.ts";
import { type Cleanups, serveAgentLinks, serveFrontends } from "./server_listeners.ts";
import { serveBoundedHttp } from "@knp/cli/http_server";
import { certificateSources } from "@knp/cli/certificate_metrics";
import type { GrpcTransportConfig } from "./grpc_transport_flags.ts";
import type { FastLinkConfig } from "./fast_link.ts";
import { AdminPages, type AdminPagesConfig } from "./status.ts";
import { serverReadiness } from "./readiness.ts";

/** Where and how to listen. Ports may be 0 (pick a free one). */
export interface ProxyServerConfig
  extends
    ProxyServerOptions,
    SelfDestinationConfig,
    GrpcTransportConfig,
    FastLinkConfig,
    AdminPagesConfig {
  /** Port of the knp WebSocket agent link; undefined = off, 0 = any free port. */
  websocketPort?: number;
  /**
   * Per-connection flow-control window (bytes) offered to knp agents that ask for it; 0 turns the
   * extension off. @default 1048576
   */
  flowControlWindow?: number;
  /** Frontend protocol. @default "grpc" */
  mode?: "grpc" | "http-connect";
  /** Frontend UDS path; when set, the TCP frontend is off. */
  udsName?: string;
  /** Delete an existing UDS file before listening. @default true */
  deleteExistingUdsFile?: boolean;
  /** Address of the TCP frontend. */
  serverBindAddress?: string;
  /** Port of the TCP frontend; 0 picks a free one. */
  serverPort?: number;
  /** Frontend TLS (TCP mode): cert, key and the CA that verifies frontend client certs. */
  serverTls?: TlsMaterial | TlsSource;
  /** Address of the agent port. */
  agentBindAddress?: string;
  /** Agent port; 0 picks a free one. */
  agentPort: number;
  /** Agent-facing TLS; a CA enables mTLS. */
  clusterTls: TlsMaterial | TlsSource;
  /**
   * Minimum TLS version and cipher list of both TLS listeners (see `tlsPolicyFromFlags`).
   * @default { minVersion: "TLSv1.2" }
   */
  tlsPolicy?: TlsPolicy;
  /** Interval of keepalive pings to agents. */
  keepaliveTimeMs?: number;
  /** Interval of keepalive pings to frontends. */
  frontendKeepaliveTimeMs?: number;
  /** Closes a gRPC frontend connection without open streams after this long. @default 60000 */
  frontendIdleTimeoutMs?: number;
  /** Largest gRPC message either gRPC server accepts, in bytes. @default 4195328 */
  maxMessageBytes?: number;
  /** Address of the health server. */
  healthBindAddress?: string;
  /** Health port; undefined = no health server. */
  healthPort?: number;
  /** Address of the admin server. */
  adminBindAddress?: string;
  /** Admin port; undefined = no admin server. */
  adminPort?: number;
  /** Bound on a health/admin connection from accept to the end of its response. @default 10000 */
  httpTimeoutMs?: number;
  /** Where the server logs. */
  logger?: Logger;
  /**
   * HTTP-CONNECT: an open tunnel whose client's bytes the far end has not taken for this long is
   * closed with an error; 0 = never. @default 300000
   */
  pausedTunnelTimeoutMs?: number;
  /**
   * Who may be an agent (authentication, claim binding, connect rate). @default certificates
   * verified against the cluster CA when it has one, else anonymous; `owner` binding.
   */
  agentGate?: AgentGate | undefined;
}

/** A running server. */
export interface ProxyServerHandle extends AsyncDisposable {
  /** The protocol core. */
  core: ProxyServer;
  /** Bound frontend TCP port (0 with a UDS). */
  serverPort: number;
  /** Bound agent port. */
  agentPort: number;
  /** Port of the WebSocket agent link (0 when off). */
  websocketPort: number;
  /** Bound health port (0 when off). */
  healthPort: number;
  /** Bound admin port (0 when off). */
  adminPort: number;
  /**
   * Stops everything. `graceful`: first stops accepting frontends (their listener closes, so new
   * connections are refused) and waits until every open frontend connection has ended, keeping
   * the agent links; then closes the rest. A later `close(false)` cuts a graceful close short.
   */
  close(graceful?: boolean): Promise<void>;
}

/** Binds the health or admin port (bounded idle connections) when `port` is set; 0 when off. */
function serveHttp(
  flag: string,
  hostname: string,
  port: number | undefined,
  handler: (req: Request) => Response,
  config: ProxyServerConfig,
  cleanups: Cleanups,
): number {
  if (port === undefined) return 0;
  const server = serveBoundedHttp({
    flag,
    hostname,
    port,
    handler,
    ...(config.httpTimeoutMs !== undefined ? { timeoutMs: config.httpTimeoutMs } : {}),
  });
  cleanups.push(() => server.close());
  return server.port;
}

/** Runs shutdown steps in reverse order, each best effort. */
async function runCleanups(cleanups: Cleanups): Promise<void> {
  for (const c of cleanups.reverse()) {
    try {
      await c();
    } catch { /* best effort */ }
  }
}

/** The addresses the health and admin servers bind (all interfaces / loopback by default). */
function httpBindAddresses(config: ProxyServerConfig): { health: string; admin: string } {
  return {
    health: config.healthBindAddress || "0.0.0.0",
    admin: config.adminBindAddress || "127.0.0.1",
  };
}

/** Binds the health and admin ports (each when configured); their ports, 0 when off. */
function serveHealthAndAdmin(
  config: ProxyServerConfig,
  handler: (req: Request) => Response,
  cleanups: Cleanups,
  adminHandler = handler,
): { health: number; admin: number } {
  const bind = httpBindAddresses(config);
  const health = serveHttp(
    "--health-port",
    bind.health,
    config.healthPort,
    handler,
    config,
    cleanups,
  );
  const admin = serveHttp(
    "--admin-port",
    bind.admin,
    config.adminPort,
    adminHandler,
    config,
    cleanups,
  );
  return { health, admin };
}

/**
 * The handle's `close`: graceful first closes the frontend gracefully (no new connections, open
 * ones finish), then the core and every other listener; a later `close(false)` cuts it short.
 */
function shutdown(
  core: ProxyServer,
  frontend: { close(graceful: boolean): Promise<void> },
  closeAll: () => Promise<void>,
): (graceful?: boolean) => Promise<void> {
  let closing: Promise<void> | undefined;
  let cut = false;
  const cutCore = () => {
    if (cut) return;
    cut = true;
    core.close();
  };
  return (graceful = false) => {
    if (!graceful && !cut) {
      cutCore();
      if (closing !== undefined) frontend.close(false).catch(() => {});
    }
    closing ??= (async () => {
      if (graceful) await frontend.close(true).catch(() => {});
      cutCore();
      await closeAll();
    })();
    return closing;
  };
}

/** The server's TCP listeners on their bind addresses (for the self rules), with `ports`. */
function ownListeners(
  config: ProxyServerConfig,
  ports: Partial<
    Record<"serverPort" | "agentPort" | "websocketPort" | "healthPort" | "adminPort", number>
  >,
): OwnListener[] {
  const bind = httpBindAddresses(config);
  return [
    { host: config.serverBindAddress, port: config.udsName ? undefined : ports.serverPort },
    { host: config.agentBindAddress, port: ports.agentPort },
    { host: config.agentBindAddress, port: ports.websocketPort },
    { host: bind.health, port: ports.healthPort },
    { host: bind.admin, port: ports.adminPort },
  ];
}

/** Starts a server. @throws {KnpError} when a listener cannot be bound */
export async function startProxyServer(config: ProxyServerConfig): Promise<ProxyServerHandle> {
  const log = config.logger ?? nullLogger;
  const core = new ProxyServer({ ...config, logger: childLogger(log, "core") });
  denySelf(core, config, ownListeners(config, config)); // the configured ports (0: not yet known)
  let httpConnections = () => 0;
  const metrics = new ServerMetrics(core, {
    httpConnections: () => httpConnections(),
    mode: config.mode ?? "grpc",
    certificates: certificateSources(config.serverTls, config.clusterTls),
  });
  logCorePackets(core.events, childLogger(log, "core")); // after the metrics' tap: -v=5 and above
  // The last tap: the status page reads its own tap's counts through `Backend.stream`.
  const pages = new AdminPages(core, {
    ...config,
    ...(config.adminPort === undefined ? { explainDials: 0 } : {}), // nobody could read them
    logger: childLogger(log, "status"),
  });
  const healthSource = {
    get ready() {
      return core.ready;
    },
    readiness: () => serverReadiness(core.backends, config.zones),
    metrics: () => metrics.render(),
  };
  const cleanups: Cleanups = [() => metrics.dispose(), () => pages.dispose()];
  const closeAll = () => runCleanups(cleanups);
  try {
    const frontend = await serveFrontends(config, core, childLogger(log, "frontend"), cleanups);
    if (frontend.connections) httpConnections = frontend.connections;
    const agents = await serveAgentLinks(config, core, childLogger(log, "agent-link"), cleanups);
    const healthHandler = serverHealthHandler(healthSource);
    const { health, admin } = serveHealthAndAdmin(
      config,
      healthHandler,
      cleanups,
      pages.handler(healthHandler),
    );
    const ports = {
      serverPort: frontend.port,
      agentPort: agents.agentPort,
      websocketPort: agents.websocketPort,
      healthPort: health,
      adminPort: admin,
    };
    denySelf(core, config, ownListeners(config, ports)); // the bound ports
    log.info("proxy server started", {
      frontend: frontend.address,
      agent: `${agents.address.replace(/:\d+$/, "")}:${agents.agentPort}`,
      mode: config.mode ?? "grpc",
      // The bound ports (the contract of `--*-port=0`): tests and tools read them from here.
      listening: ports,
    });
    const close = shutdown(core, frontend, closeAll);
    return { core, ...ports, close, [Symbol.asyncDispose]: () => close() };
  } catch (err) {
    await closeAll();
    throw err;
  }
}
