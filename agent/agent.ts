/**
 * `startAgent`: a proxy-agent — the sync loop to the server(s) plus its health and admin HTTP
 * servers.
 *
 * @module
 */

import type { TlsMaterial, TlsSource } from "@knp/transport/grpc_stream";
import { type Logger, nullLogger } from "@knp/core/log";
import { ClientSet, type ClientSetOptions } from "./client_set.ts";
import { denoDialer } from "./dialer.ts";
import { grpcConnector } from "./grpc_connector.ts";
import { fastLinkConnector } from "./fast_link.ts";
import { webSocketConnector } from "./ws_connector.ts";
import type { EgressProxy } from "./egress_proxy.ts";
import {
  agentAdminHandler,
  agentHealthHandler,
  type AgentHealthSource,
  type HealthDetails,
} from "./health.ts";
import { explainingTlsFailures } from "./tls_explain.ts";
import { AgentMetrics } from "./metrics.ts";
import { serverAddressesOf } from "./server_addresses.ts";
import { type BoundedHttpServer, serveBoundedHttp } from "@knp/cli/http_server";
import { certificateSources } from "@knp/cli/certificate_metrics";

/** Configuration of {@linkcode startAgent}. */
export interface AgentConfig
  extends Omit<ClientSetOptions, "connect" | "dialer" | "logger" | "timers"> {
  /**
   * Host name or address of the proxy server (or its load balancer); a comma list or a name with
   * several DNS records makes the agent connect to each address directly.
   */
  proxyServerHost: string;
  /** The server's agent port. */
  proxyServerPort: number;
  /** Use the knp WebSocket agent link on this server port instead of gRPC (knp servers only). */
  websocketPort?: number;
  /**
   * Without `websocketPort`: offer the WebSocket link over gRPC and switch to it when a knp server
   * answers (`--knp-fast-link`, see `fast_link.ts`). Needs TLS material. @default false
   */
  fastLink?: boolean;
  /** What carries gRPC connections (`--knp-grpc-transport`). @default "native" */
  grpcTransport?: "native" | "grpc-js" | undefined;
  /**
   * `--alpn-proto`: ALPN protocols offered before `h2` (gRPC, native transport only) and before
   * `http/1.1` (the WebSocket link). @default []
   */
  alpnProto?: readonly string[] | undefined;
  /** The egress proxy the WebSocket link tunnels through (not the gRPC link: grpc-js's own). */
  egressProxy?: EgressProxy | undefined;
  /** This agent's id, sent to servers as `agentID`. */
  agentId: string;
  /** Identifiers advertised to servers, as the `--agent-identifiers` flag takes them. */
  agentIdentifiers?: string;
  /** Fixed material, or a source (e.g. `TlsFiles`) read again at every connection attempt. */
  tls?: TlsMaterial | TlsSource;
  /** Bearer token file sent to servers that authenticate agents. */
  serviceAccountTokenPath?: string;
  /** Interval of keepalive pings on server connections. */
  keepaliveTimeMs?: number;
  /** Address the health server binds. */
  healthServerHost?: string;
  /** undefined = no health server; 0 = any free port. */
  healthServerPort?: number;
  /** Address the admin server binds. */
  adminBindAddress?: string;
  /** Admin port; undefined = no admin server; 0 = any free port. */
  adminServerPort?: number;
  /** Bound on a health/admin connection from accept to the end of its response. @default 10000 */
  httpTimeoutMs?: number;
  /** Where the agent logs. */
  logger?: Logger;
  /** Extra lines of `/readyz?verbose` (the Lease count's state). */
  healthDetails?: HealthDetails;
  /** Dials endpoints; defaults to TCP. */
  dialer?: ClientSetOptions["dialer"];
}

/** A running agent. */
export interface AgentHandle extends AsyncDisposable {
  /** The agent's server connections. */
  clients: ClientSet;
  /** The agent's Prometheus metrics (served on the health port's `/metrics`). */
  metrics: AgentMetrics;
  /** Bound health port (0 when off). */
  healthPort: number;
  /** Bound admin port (0 when off). */
  adminPort: number;
  /** First signal: DRAIN, keep proxying. */
  drain(): void;
  /** Second signal: refuse new dials, let open connections finish (bounded), then close. */
  shutdown(graceMs: number): Promise<void>;
  /** Stops at once: closes every server connection and endpoint connection. */
  close(): Promise<void>;
}

/**
 * The connector of the configured link: the knp WebSocket link, upstream's gRPC, or gRPC offering
 * the WebSocket link (the fast link).
 */
function connectorFor(config: AgentConfig, log: Logger): ClientSetOptions["connect"] {
  const common = {
    host: config.proxyServerHost,
    agentId: config.agentId,
    agentIdentifiers: config.agentIdentifiers ?? "",
    ...(config.serviceAccountTokenPath ? { tokenPath: config.serviceAccountTokenPath } : {}),
    keepaliveTimeMs: config.keepaliveTimeMs,
    ...(config.alpnProto?.length ? { alpnProtocols: config.alpnProto } : {}),
  };
  const websocket = { ...common, proxy: config.egressProxy, tls: config.tls ?? {} };
  const grpc = {
    ...common,
    port: config.proxyServerPort,
    tls: config.tls,
    grpcTransport: config.grpcTransport,
  };
  // The WebSocket link is TLS only: a plaintext agent (tests) makes no offer.
  const offer = !config.websocketPort && config.fastLink === true && config.tls !== undefined;
  let connect: ClientSetOptions["connect"];
  if (config.websocketPort) {
    connect = webSocketConnector({ ...websocket, port: config.websocketPort });
  } else if (offer) connect = fastLinkConnector({ grpc, websocket, logger: log });
  else connect = grpcConnector(grpc);
  return explainingTlsFailures(connect, {
    host: config.proxyServerHost,
    port: config.websocketPort || config.proxyServerPort,
    tls: config.tls,
  });
}

/** Binds the health or admin port (bounded idle connections) when `port` is set; 0 when off. */
function serveHttp(
  flag: string,
  hostname: string,
  port: number | undefined,
  handler: (req: Request) => Response,
  config: AgentConfig,
  servers: BoundedHttpServer[],
): number {
  if (port === undefined) return 0;
  const server = serveBoundedHttp({
    flag,
    hostname,
    port,
    handler,
    ...(config.httpTimeoutMs !== undefined ? { timeoutMs: config.httpTimeoutMs } : {}),
  });
  servers.push(server);
  return server.port;
}

/** The agent's server connections, counted by `metrics`. */
function newClientSet(config: AgentConfig, log: Logger, metrics: AgentMetrics): ClientSet {
  return new ClientSet({
    ...config,
    onDial: (event) => {
      metrics.onDial(event);
      config.onDial?.(event);
    },
    logger: log,
    dialer: config.dialer ?? denoDialer,
    connect: metrics.connector(connectorFor(config, log)),
    ...serverAddressesOf(config.proxyServerHost, log),
  });
}

/** What the health port reports: readiness from `clients`, `/metrics` from `metrics`. */
function healthSource(clients: ClientSet, metrics: AgentMetrics): AgentHealthSource {
  return {
    get ready() {
      return clients.ready;
    },
    servers: () => ({
      held: clients.size,
      wanted: clients.serverCount,
      ids: clients.serverIds,
      draining: clients.draining,
    }),
    metrics: () => metrics.render(),
  };
}

/** Starts an agent. @throws {KnpError} `CONFIG` when the health or admin port cannot be bound */
export function startAgent(config: AgentConfig): AgentHandle {
  const log = (config.logger ?? nullLogger).with({ agentID: config.agentId });
  const metrics = new AgentMetrics({ certificates: certificateSources(config.tls) });
  const clients = newClientSet(config, log, metrics);
  const servers: BoundedHttpServer[] = [];
  let healthPort: number;
  let adminPort: number;
  try {
    healthPort = serveHttp(
      "--health-server-port",
      config.healthServerHost || "0.0.0.0",
      config.healthServerPort,
      agentHealthHandler(healthSource(clients, metrics), config.healthDetails),
      config,
      servers,
    );
    adminPort = serveHttp(
      "--admin-server-port",
      config.adminBindAddress || "127.0.0.1",
      config.adminServerPort,
      agentAdminHandler(healthPort),
      config,
      servers,
    );
  } catch (err) {
    for (const s of servers) s.close().catch(() => {});
    throw err;
  }
  clients.start();
  log.info("proxy agent started", {
    server: `${config.proxyServerHost}:${config.proxyServerPort}`,
    healthPort,
  });
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    clients.stop();
    await Promise.all(servers.map((s) => s.close()));
  };
  metrics.watch(clients);
  return {
    clients,
    metrics,
    healthPort,
    adminPort,
    drain: () => clients.drain(),
    async shutdown(graceMs) {
      await clients.shutdown(graceMs, config.agentId);
      await close();
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
