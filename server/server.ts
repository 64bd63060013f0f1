/**
 * `startProxyServer`: binds the frontend (gRPC over a UDS or over TCP with mTLS), the agent
 * service (gRPC over TLS, mTLS when a CA is given) and the health/admin HTTP servers around one
 * {@linkcode ProxyServer} core.
 *
 * @module
 */

import { FLOW_CONTROL_KEY, formatFlowControl, parseFlowControl, USER_AGENT_KEY } from "@knp/proto";
import { errorMessage, KnpError } from "@knp/core/errors";
import {
  type GrpcServerHandle,
  serveGrpc,
  type TlsMaterial,
  type TlsPolicy,
  type TlsSource,
} from "@knp/transport/grpc_stream";
import { currentTlsMaterial, isTlsSource } from "@knp/transport/tls_files";
import { type Logger, nullLogger } from "@knp/core/log";
import { rm } from "node:fs/promises";
import { ProxyServer, type ProxyServerOptions } from "./proxy_server.ts";
import { serverHealthHandler } from "./health.ts";
import { ServerMetrics } from "./metrics.ts";
import { serveHttpConnect } from "./http_connect_listener.ts";
import { serveAgentWebSocket } from "./ws_agent_listener.ts";

/** Where and how to listen. Ports may be 0 (pick a free one). */
export interface ProxyServerConfig extends ProxyServerOptions {
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
  serverBindAddress?: string;
  serverPort?: number;
  /** Frontend TLS (TCP mode): cert, key and the CA that verifies frontend client certs. */
  serverTls?: TlsMaterial | TlsSource;
  agentBindAddress?: string;
  agentPort: number;
  /** Agent-facing TLS; a CA enables mTLS. */
  clusterTls: TlsMaterial | TlsSource;
  /**
   * Minimum TLS version and cipher list of both TLS listeners (see `tlsPolicyFromFlags`).
   * @default { minVersion: "TLSv1.2" }
   */
  tlsPolicy?: TlsPolicy;
  keepaliveTimeMs?: number;
  frontendKeepaliveTimeMs?: number;
  healthBindAddress?: string;
  /** Health port; undefined = no health server. */
  healthPort?: number;
  adminBindAddress?: string;
  adminPort?: number;
  logger?: Logger;
}

/** A running server. */
export interface ProxyServerHandle extends AsyncDisposable {
  core: ProxyServer;
  /** Bound frontend TCP port (0 with a UDS). */
  serverPort: number;
  agentPort: number;
  /** Port of the WebSocket agent link (0 when off). */
  websocketPort: number;
  healthPort: number;
  adminPort: number;
  /** Stops everything; `graceful` lets open frontend streams finish. */
  close(graceful?: boolean): Promise<void>;
}

function hostPort(host: string | undefined, port: number): string {
  const h = host && host !== "" ? host : "0.0.0.0";
  return h.includes(":") ? `[${h}]:${port}` : `${h}:${port}`;
}

/** Starts a server. @throws {KnpError} when a listener cannot be bound */
export async function startProxyServer(config: ProxyServerConfig): Promise<ProxyServerHandle> {
  const log = config.logger ?? nullLogger;
  const flowWindow = config.flowControlWindow ?? 1 << 20;
  const metrics = new ServerMetrics();
  const onEvent = config.onEvent;
  const core = new ProxyServer({
    ...config,
    logger: log,
    onEvent: (e) => {
      metrics.onEvent(e);
      onEvent?.(e);
    },
  });
  metrics.attach(core);
  let httpConnections = () => 0;
  metrics.httpConnections = () => httpConnections();
  const healthSource = {
    get ready() {
      return core.ready;
    },
    metrics: () => metrics.render(),
  };
  const cleanups: (() => Promise<void> | void)[] = [];
  const closeAll = async () => {
    for (const c of cleanups.reverse()) {
      try {
        await c();
      } catch { /* best effort */ }
    }
  };
  try {
    // Frontend.
    let frontendAddress: string;
    if (config.udsName) {
      if (config.deleteExistingUdsFile ?? true) await rm(config.udsName, { force: true });
      frontendAddress = `unix:${config.udsName}`;
    } else {
      frontendAddress = hostPort(config.serverBindAddress, config.serverPort ?? 8090);
    }
    let serverPort: number;
    if (config.mode === "http-connect") {
      const listener = await serveHttpConnect({
        core,
        udsPath: config.udsName,
        hostname: config.serverBindAddress,
        port: config.serverPort ?? 8090,
        tls: config.serverTls && currentTlsMaterial(config.serverTls),
        tlsOptions: config.tlsPolicy,
        logger: log,
      }).catch((err) => {
        throw new KnpError(
          "CONFIG",
          `cannot listen for HTTP-CONNECT frontends on ${frontendAddress}: ${errorMessage(err)}`,
          { cause: err },
        );
      });
      serverPort = listener.port;
      if (!config.udsName && config.serverTls && isTlsSource(config.serverTls)) {
        cleanups.push(config.serverTls.onChange((material) => listener.updateTls(material)));
      }
      httpConnections = () => listener.connections;
      cleanups.push(() => listener.close());
    } else {
      const frontend: GrpcServerHandle = await serveGrpc({
        service: "proxy",
        address: frontendAddress,
        tls: config.udsName ? undefined : config.serverTls,
        tlsPolicy: config.tlsPolicy,
        keepaliveTimeMs: config.frontendKeepaliveTimeMs,
        onStream(incoming) {
          core.serveFrontend(incoming.stream, incoming.metadata(USER_AGENT_KEY)[0] ?? "");
        },
      }).catch((err) => {
        throw new KnpError(
          "CONFIG",
          `cannot listen for frontends on ${frontendAddress}: ${errorMessage(err)}`,
          { cause: err },
        );
      });
      serverPort = frontend.port;
      cleanups.push(() => frontend.close(false));
    }

    // Agents.
    const agentAddress = hostPort(config.agentBindAddress, config.agentPort);
    const agents = await serveGrpc({
      service: "agent",
      address: agentAddress,
      tls: config.clusterTls,
      tlsPolicy: config.tlsPolicy,
      keepaliveTimeMs: config.keepaliveTimeMs,
      onStream(incoming) {
        let hs;
        try {
          hs = core.agentHandshake(
            incoming.metadata("agentid"),
            incoming.metadata("agentidentifiers"),
          );
        } catch (err) {
          log.warn("agent rejected", { peer: incoming.peer, error: errorMessage(err) });
          incoming.reject(err as Error);
          return;
        }
        // knp agents offer per-connection flow control; upstream agents send no such metadata.
        const agentWindow = flowWindow > 0
          ? parseFlowControl(incoming.metadata(FLOW_CONTROL_KEY))
          : undefined;
        const headers: Record<string, string> = { ...hs.headers };
        if (agentWindow) headers[FLOW_CONTROL_KEY] = formatFlowControl(flowWindow);
        incoming.sendHeaders(headers);
        core.addBackend(
          hs.agentId,
          hs.identifiers,
          incoming.stream,
          agentWindow ? { sendWindow: agentWindow, recvWindow: flowWindow } : undefined,
        );
      },
    }).catch((err) => {
      throw new KnpError(
        "CONFIG",
        `cannot listen for agents on ${agentAddress}: ${errorMessage(err)}`,
        {
          cause: err,
        },
      );
    });
    cleanups.push(() => agents.close(false));

    // The knp WebSocket agent link (optional; same Packets, native TLS, always flow-controlled).
    let websocketPort = 0;
    if (config.websocketPort !== undefined) {
      try {
        const link = serveAgentWebSocket({
          core,
          hostname: config.agentBindAddress,
          port: config.websocketPort,
          tls: config.clusterTls,
          flowWindow: flowWindow > 0 ? flowWindow : 1 << 20,
          logger: log,
        });
        websocketPort = link.port;
        cleanups.push(() => link.close());
      } catch (err) {
        throw new KnpError(
          "CONFIG",
          `cannot listen for WebSocket agent links on port ${config.websocketPort}: ${
            errorMessage(err)
          }`,
          { cause: err },
        );
      }
    }

    // Health and admin.
    let healthPort = 0;
    if (config.healthPort !== undefined) {
      const health = Deno.serve({
        hostname: config.healthBindAddress || "0.0.0.0",
        port: config.healthPort,
        onListen() {},
      }, serverHealthHandler(healthSource));
      healthPort = health.addr.port;
      cleanups.push(() => health.shutdown());
    }
    let adminPort = 0;
    if (config.adminPort !== undefined) {
      const admin = Deno.serve({
        hostname: config.adminBindAddress || "127.0.0.1",
        port: config.adminPort,
        onListen() {},
      }, serverHealthHandler(healthSource));
      adminPort = admin.addr.port;
      cleanups.push(() => admin.shutdown());
    }
    log.info("proxy server started", {
      frontend: frontendAddress,
      agent: `${agentAddress.replace(/:\d+$/, "")}:${agents.port}`,
      mode: config.mode ?? "grpc",
      // The bound ports (the contract of `--*-port=0`): tests and tools read them from here.
      listening: { serverPort, agentPort: agents.port, websocketPort, healthPort, adminPort },
    });
    let closed = false;
    const close = async (graceful = false) => {
      if (closed) return;
      closed = true;
      if (!graceful) core.close();
      await closeAll();
    };
    return {
      core,
      serverPort,
      agentPort: agents.port,
      websocketPort,
      healthPort,
      adminPort,
      close,
      [Symbol.asyncDispose]: () => close(),
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}
