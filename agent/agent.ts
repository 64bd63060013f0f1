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
import { webSocketConnector } from "./ws_connector.ts";
import { agentAdminHandler, agentHealthHandler } from "./health.ts";

/** Configuration of {@linkcode startAgent}. */
export interface AgentConfig
  extends Omit<ClientSetOptions, "connect" | "dialer" | "logger" | "timers"> {
  proxyServerHost: string;
  proxyServerPort: number;
  /** Use the knp WebSocket agent link on this server port instead of gRPC (knp servers only). */
  websocketPort?: number;
  agentId: string;
  agentIdentifiers?: string;
  /** Fixed material, or a source (e.g. `TlsFiles`) read again at every connection attempt. */
  tls?: TlsMaterial | TlsSource;
  serviceAccountTokenPath?: string;
  keepaliveTimeMs?: number;
  healthServerHost?: string;
  /** undefined = no health server; 0 = any free port. */
  healthServerPort?: number;
  adminBindAddress?: string;
  adminServerPort?: number;
  logger?: Logger;
  dialer?: ClientSetOptions["dialer"];
}

/** A running agent. */
export interface AgentHandle extends AsyncDisposable {
  clients: ClientSet;
  healthPort: number;
  adminPort: number;
  /** First signal: DRAIN, keep proxying. */
  drain(): void;
  /** Second signal: refuse new dials, let open connections finish (bounded), then close. */
  shutdown(graceMs: number): Promise<void>;
  close(): Promise<void>;
}

/** Starts an agent. */
export function startAgent(config: AgentConfig): AgentHandle {
  const log = (config.logger ?? nullLogger).with({ agentID: config.agentId });
  const clients = new ClientSet({
    ...config,
    logger: log,
    dialer: config.dialer ?? denoDialer,
    connect: config.websocketPort
      ? webSocketConnector({
        host: config.proxyServerHost,
        port: config.websocketPort,
        agentId: config.agentId,
        agentIdentifiers: config.agentIdentifiers ?? "",
        tls: config.tls ?? {},
        tokenPath: config.serviceAccountTokenPath,
      })
      : grpcConnector({
        host: config.proxyServerHost,
        port: config.proxyServerPort,
        agentId: config.agentId,
        agentIdentifiers: config.agentIdentifiers ?? "",
        tls: config.tls,
        tokenPath: config.serviceAccountTokenPath,
        keepaliveTimeMs: config.keepaliveTimeMs,
      }),
  });
  const servers: Deno.HttpServer[] = [];
  let healthPort = 0;
  let adminPort = 0;
  if (config.healthServerPort !== undefined) {
    const health = Deno.serve({
      hostname: config.healthServerHost || "0.0.0.0",
      port: config.healthServerPort,
      onListen() {},
    }, agentHealthHandler(clients));
    healthPort = health.addr.port;
    servers.push(health);
  }
  if (config.adminServerPort !== undefined) {
    const admin = Deno.serve({
      hostname: config.adminBindAddress || "127.0.0.1",
      port: config.adminServerPort,
      onListen() {},
    }, agentAdminHandler(healthPort));
    adminPort = admin.addr.port;
    servers.push(admin);
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
    await Promise.all(servers.map((s) => s.shutdown()));
  };
  return {
    clients,
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
