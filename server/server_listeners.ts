/**
 * The listeners `startProxyServer` binds around its core: the frontend (gRPC or HTTP-CONNECT, on
 * a UDS or on TCP with mTLS), the agent links (gRPC `Connect` and the optional WebSocket link; with
 * the fast link, see fast_link.ts, the native agent port serves the WebSocket link too) and
 * the plain HTTP health/admin ports. Each registers its shutdown in `cleanups`.
 *
 * @module
 */

import { USER_AGENT_KEY } from "@knp/proto";
import { errorMessage, KnpError } from "@knp/core/errors";
import { grpcServeFunction } from "./grpc_serve.ts";
import { keepaliveFor } from "@knp/transport/keepalive";
import { currentTlsMaterial, isTlsSource } from "@knp/transport/tls_files";
import { tlsClientErrorFields } from "@knp/transport/cert_validity";
import type { Logger } from "@knp/core/log";
import { rm } from "node:fs/promises";
import { type AgentHandshakeOptions, handshakeAgent, refuseAgent } from "./agent_handshake.ts";
import { certificateFacts } from "./agent_auth.ts";
import type { IncomingStream, PeerTls } from "@knp/transport/grpc_stream";
import type { ServeGrpcOptions } from "@knp/transport/grpc_server";
import { serveH2Grpc, type ServeH2GrpcOptions } from "@knp/transport/h2/serve";
import type { KeepaliveOptions } from "@knp/transport/packet_stream";
import type { ProxyServer } from "./proxy_server.ts";
import type { ProxyServerConfig } from "./server.ts";
import { serveHttpConnect } from "./http_connect_listener.ts";
import {
  AgentLinkHandler,
  type AgentLinkOptions,
  serveAgentWebSocket,
} from "./ws_agent_listener.ts";
import { answerLinkOffer, sharedLinkSockets } from "./fast_link.ts";

/** Shutdown steps, run in reverse order. */
export type Cleanups = (() => Promise<void> | void)[];

/** "host:port", with IPv6 hosts in brackets; an empty host means all interfaces. */
export function hostPort(host: string | undefined, port: number): string {
  const h = host && host !== "" ? host : "0.0.0.0";
  return h.includes(":") ? `[${h}]:${port}` : `${h}:${port}`;
}

/** Wraps a bind failure as a `CONFIG` error naming what could not listen where. */
function bindError(what: string, err: unknown): KnpError {
  return new KnpError("CONFIG", `cannot listen for ${what}: ${errorMessage(err)}`, { cause: err });
}

/** A bound frontend. */
export interface BoundFrontend {
  /** The configured address, for the start log. */
  address: string;
  /** Bound TCP port (0 with a UDS). */
  port: number;
  /** Open HTTP-CONNECT client connections (HTTP-CONNECT mode only). */
  connections?: () => number;
  /** Closes the frontend; `graceful` stops accepting and waits for open connections to end. */
  close(graceful: boolean): Promise<void>;
}

/** Binds the frontend listener of `config.mode`. */
export async function serveFrontends(
  config: ProxyServerConfig,
  core: ProxyServer,
  log: Logger,
  cleanups: Cleanups,
): Promise<BoundFrontend> {
  let address: string;
  if (config.udsName) {
    if (config.deleteExistingUdsFile ?? true) await rm(config.udsName, { force: true });
    address = `unix:${config.udsName}`;
  } else {
    address = hostPort(config.serverBindAddress, config.serverPort ?? 8090);
  }
  if (config.mode === "http-connect") {
    const listener = await serveHttpConnect({
      core,
      udsPath: config.udsName,
      hostname: config.serverBindAddress,
      port: config.serverPort ?? 8090,
      tls: config.serverTls && currentTlsMaterial(config.serverTls),
      tlsOptions: config.tlsPolicy,
      logger: log,
      ...(config.pausedTunnelTimeoutMs !== undefined
        ? { pausedTimeoutMs: config.pausedTunnelTimeoutMs }
        : {}),
    }).catch((err) => {
      throw bindError(`HTTP-CONNECT frontends on ${address}`, err);
    });
    cleanups.push(() => listener.close());
    if (!config.udsName && config.serverTls && isTlsSource(config.serverTls)) {
      cleanups.push(config.serverTls.onChange((material) => listener.updateTls(material)));
    }
    return {
      address,
      port: listener.port,
      connections: () => listener.connections,
      close: (graceful) => listener.close(graceful),
    };
  }
  const frontend = await grpcServeFunction(config)({
    service: "proxy",
    address,
    tls: config.udsName ? undefined : config.serverTls,
    tlsPolicy: config.tlsPolicy,
    keepaliveTimeMs: config.frontendKeepaliveTimeMs,
    keepalive: keepaliveFor(config.frontendKeepaliveTimeMs ?? 3_600_000),
    idleTimeoutMs: config.frontendIdleTimeoutMs ?? 60_000,
    maxMessageBytes: config.maxMessageBytes,
    onStream(incoming) {
      const userAgent = incoming.metadata(USER_AGENT_KEY)[0] ?? "";
      core.serveFrontend(incoming.stream, userAgent, incoming.session);
    },
  }).catch((err) => {
    throw bindError(`frontends on ${address}`, err);
  });
  cleanups.push(() => frontend.close(false));
  return { address, port: frontend.port, close: (graceful) => frontend.close(graceful) };
}

/** Bound agent links. */
export interface BoundAgentLinks {
  address: string;
  agentPort: number;
  /** 0 when the WebSocket link is off. */
  websocketPort: number;
}

/** The cluster CA verifying agent certificates now (it may be reloaded). */
function clusterCa(config: ProxyServerConfig): () => Uint8Array | string | undefined {
  return () => currentTlsMaterial(config.clusterTls).ca;
}

/** Runs the handshake of one gRPC `Connect` call; registers the agent when it passes. */
async function admitGrpcAgent(
  core: ProxyServer,
  incoming: IncomingStream,
  ca: () => Uint8Array | string | undefined,
  options: AgentHandshakeOptions,
): Promise<void> {
  const link = {
    metadata: (key: string) => incoming.metadata(key),
    peer: incoming.peer,
    reject: (err: Error) => incoming.reject(err),
    ...certificateFacts(incoming.peerTls?.chain.join(""), ca(), incoming.peerTls),
  };
  const admission = await handshakeAgent(core, link, options);
  if (!admission) return;
  try {
    incoming.sendHeaders(admission.headers);
    admission.register(incoming.stream);
  } catch (err) {
    refuseAgent(core, link, options, err, admission.agentId);
  }
}

/** The agent port's check of a client certificate, before any protocol sees a byte. */
function agentCertificateCheck(
  config: ProxyServerConfig,
  core: ProxyServer,
  log: Logger,
  linkName?: string,
): (tls: PeerTls, peer: string) => boolean {
  // An agent whose certificate does not verify is logged with the reason and cut; the others'
  // certificates name them in the handshake.
  return (tls, peer) => {
    const { certificateError } = certificateFacts(tls.chain.join(""), clusterCa(config)(), tls);
    if (!certificateError) return true;
    const options = { logger: log, ...(linkName ? { linkName } : {}) };
    refuseAgent(core, { peer, reject: () => {} }, options, certificateError, undefined);
    return false;
  };
}

/** The WebSocket agent link's options (on its own port and on the shared agent port). */
function agentLinkOptions(
  config: ProxyServerConfig,
  core: ProxyServer,
  log: Logger,
  keepalive: KeepaliveOptions | undefined,
): AgentLinkOptions {
  const flowWindow = config.flowControlWindow ?? 1 << 20;
  return {
    core,
    tls: config.clusterTls,
    flowWindow: flowWindow > 0 ? flowWindow : 1 << 20,
    keepalive,
    logger: log,
    gate: config.agentGate,
    maxMessageBytes: config.maxMessageBytes,
  };
}

/**
 * With the fast link under the native transport (and a certificate to serve TLS with), the
 * WebSocket agent link's handler for the agent port's non-HTTP/2 connections; else undefined.
 */
function sharedAgentLink(
  config: ProxyServerConfig,
  options: AgentLinkOptions,
  cleanups: Cleanups,
): AgentLinkHandler | undefined {
  const material = currentTlsMaterial(config.clusterTls);
  if (!config.fastLink || grpcServeFunction(config) !== serveH2Grpc) return undefined;
  if (!material.cert || !material.key) return undefined;
  const handler = new AgentLinkHandler(options);
  cleanups.push(() => handler.close());
  return handler;
}

/** Binds the gRPC agent service and, when configured, the WebSocket agent link. */
export async function serveAgentLinks(
  config: ProxyServerConfig,
  core: ProxyServer,
  log: Logger,
  cleanups: Cleanups,
): Promise<BoundAgentLinks> {
  const flowWindow = config.flowControlWindow ?? 1 << 20;
  const address = hostPort(config.agentBindAddress, config.agentPort);
  // Dead agents are dropped within keepalive time + timeout; their pending dials fail at once.
  const keepalive = keepaliveFor(config.keepaliveTimeMs ?? 3_600_000);
  const linkOptions = agentLinkOptions(config, core, log, keepalive);
  const shared = sharedAgentLink(config, linkOptions, cleanups);
  const acceptClient = agentCertificateCheck(config, core, log);
  // The port a knp agent's link offer is answered with (0: none); set once the ports are bound.
  let switchPort = 0;
  const options: ServeGrpcOptions & Pick<ServeH2GrpcOptions, "onOtherProtocol"> = {
    service: "agent",
    address,
    tls: config.clusterTls,
    tlsPolicy: config.tlsPolicy,
    keepaliveTimeMs: config.keepaliveTimeMs,
    keepalive,
    maxMessageBytes: config.maxMessageBytes,
    onTlsClientError(err, peer) {
      log.info("TLS handshake on the agent port failed", { peer, ...tlsClientErrorFields(err) });
    },
    clientCertificates: "requested",
    acceptClient,
    ...(shared
      ? {
        onOtherProtocol: sharedLinkSockets(
          shared,
          agentCertificateCheck(config, core, log, "WebSocket"),
        ),
      }
      : {}),
    onStream(incoming) {
      if (answerLinkOffer(incoming, switchPort, log)) return;
      void admitGrpcAgent(core, incoming, clusterCa(config), {
        flowWindow,
        logger: log,
        gate: config.agentGate,
      });
    },
  };
  const agents = await grpcServeFunction(config)(options).catch((err) => {
    throw bindError(`agents on ${address}`, err);
  });
  cleanups.push(() => agents.close(false));
  const websocketPort = await serveWebSocketPort(config, linkOptions, cleanups);
  if (config.fastLink) switchPort = shared ? agents.port : websocketPort;
  return { address, agentPort: agents.port, websocketPort };
}

/** The knp WebSocket agent link on its own port, when configured; its port or 0. */
async function serveWebSocketPort(
  config: ProxyServerConfig,
  options: AgentLinkOptions,
  cleanups: Cleanups,
): Promise<number> {
  if (config.websocketPort === undefined) return 0;
  const link = await serveAgentWebSocket({
    ...options,
    hostname: config.agentBindAddress,
    port: config.websocketPort,
  }).catch((err) => {
    throw bindError(`WebSocket agent links on port ${config.websocketPort}`, err);
  });
  cleanups.push(() => link.close());
  return link.port;
}

/** Binds a plain HTTP server (health, admin) when `port` is set; returns its port or 0. */
export function serveHttp(
  hostname: string,
  port: number | undefined,
  handler: Deno.ServeHandler<Deno.NetAddr>,
  cleanups: Cleanups,
): number {
  if (port === undefined) return 0;
  const server = Deno.serve({ hostname, port, onListen() {} }, handler);
  cleanups.push(() => server.shutdown());
  return server.addr.port;
}
