/**
 * The knp agent link over a TLS WebSocket (`--knp-websocket-port`): faster than gRPC under Deno
 * and able to pass HTTP proxies that break gRPC. It carries the same Packets with the same
 * semantics; per-connection flow control is mandatory here.
 *
 * Handshake, all bounded by `handshakeTimeoutMs`:
 * 1. `GET /knp/v1/agent` upgrade with the gRPC link's metadata as headers (`agentid`,
 *    `agentidentifiers`, `knp-flow-control`, optional `authorization`) plus `knp-agent-cert`.
 *    With a cluster CA, the certificate chain must check out (see internal/agent_proof.ts).
 * 2. Server → agent text: `{"serverId","serverCount","window","challenge"}`.
 * 3. Agent → server text: `{"signature"}` over the challenge; verified with the certificate.
 * 4. Server → agent text: `{"ready":true}`; binary Packet frames from then on.
 *
 * Certificates reload without a restart of the process: on a change the listener is rebound with
 * the new material; open links continue.
 *
 * @module
 */

import type { X509Certificate } from "node:crypto";
import { FLOW_CONTROL_KEY, parseFlowControl } from "@knp/proto";
import {
  AGENT_CERT_HEADER,
  newChallenge,
  proofPayload,
  verifyAgentChain,
  verifyProof,
} from "@knp/transport/agent_proof";
import { errorMessage, KnpError } from "@knp/core/errors";
import { type Logger, nullLogger } from "@knp/core/log";
import {
  currentTlsMaterial,
  isTlsSource,
  type TlsMaterial,
  type TlsSource,
} from "@knp/transport/tls_files";
import { WebSocketPacketStream } from "@knp/transport/ws_stream";
import type { ProxyServer } from "./proxy_server.ts";

/** Path of the agent link. */
export const AGENT_LINK_PATH = "/knp/v1/agent";

/** Options of {@linkcode serveAgentWebSocket}. */
export interface AgentWebSocketOptions {
  core: ProxyServer;
  hostname?: string;
  port: number;
  /** Server certificate and key; a CA makes the agent's certificate proof mandatory. */
  tls: TlsMaterial | TlsSource;
  /** Per-connection window this server grants. */
  flowWindow: number;
  /** @default 10000 */
  handshakeTimeoutMs?: number;
  logger?: Logger;
}

/** A running agent-link listener. */
export interface AgentWebSocketListener {
  port: number;
  close(): Promise<void>;
}

function reject(status: number, message: string): Response {
  return new Response(message + "\n", {
    status,
    headers: { "content-type": "text/plain; charset=utf-8" },
  });
}

/** Reads the next text message of a handshake, or fails after `ms`. */
function nextText(ws: WebSocket, ms: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new KnpError("TIMEOUT", "handshake timed out")), ms);
    const done = (err?: Error, value?: Record<string, unknown>) => {
      clearTimeout(timer);
      ws.onmessage = null;
      ws.onclose = null;
      if (err) reject(err);
      else resolve(value!);
    };
    ws.onmessage = (e) => {
      try {
        if (typeof e.data !== "string") throw new Error("expected a text message");
        done(undefined, JSON.parse(e.data));
      } catch (err) {
        done(new KnpError("HANDSHAKE", `bad handshake message: ${errorMessage(err)}`));
      }
    };
    ws.onclose = () => done(new KnpError("HANDSHAKE", "link closed during the handshake"));
  });
}

/** Serves the agent link. @throws {Error} when the port cannot be bound */
export function serveAgentWebSocket(options: AgentWebSocketOptions): AgentWebSocketListener {
  const log = options.logger ?? nullLogger;
  const timeout = options.handshakeTimeoutMs ?? 10_000;
  const { core } = options;
  const sockets = new Set<WebSocket>();

  const handler = (req: Request, info: Deno.ServeHandlerInfo): Response => {
    const peer = `${(info.remoteAddr as Deno.NetAddr).hostname}:${
      (info.remoteAddr as Deno.NetAddr).port
    }`;
    if (new URL(req.url).pathname !== AGENT_LINK_PATH) return reject(404, "not found");
    if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return reject(426, "the knp agent link needs a WebSocket upgrade");
    }
    const header = (name: string) => {
      const v = req.headers.get(name);
      return v === null ? [] : [v];
    };
    let hs;
    let leaf: X509Certificate | undefined;
    let agentWindow;
    try {
      hs = core.agentHandshake(header("agentid"), header("agentidentifiers"));
      agentWindow = parseFlowControl(header(FLOW_CONTROL_KEY));
      if (!agentWindow) {
        throw new KnpError(
          "HANDSHAKE",
          `the WebSocket link needs a valid ${FLOW_CONTROL_KEY} header`,
        );
      }
      const ca = currentTlsMaterial(options.tls).ca;
      if (ca) {
        const chain = req.headers.get(AGENT_CERT_HEADER);
        if (!chain) throw new KnpError("HANDSHAKE", "the agent sent no certificate");
        leaf = verifyAgentChain(atob(chain), ca);
      }
    } catch (err) {
      log.warn("agent rejected on the WebSocket link", { peer, error: errorMessage(err) });
      return reject(401, errorMessage(err));
    }
    const { socket, response } = Deno.upgradeWebSocket(req, { idleTimeout: 0 });
    sockets.add(socket);
    socket.addEventListener("close", () => sockets.delete(socket));
    const agentId = hs.agentId;
    const challenge = newChallenge();
    socket.onopen = async () => {
      try {
        socket.send(JSON.stringify({
          serverId: core.serverId,
          serverCount: core.serverCount,
          window: options.flowWindow,
          challenge,
        }));
        const proof = await nextText(socket, timeout);
        if (leaf) {
          const payload = proofPayload(core.serverId, agentId, challenge);
          if (typeof proof.signature !== "string" || !verifyProof(leaf, payload, proof.signature)) {
            throw new KnpError("HANDSHAKE", "the agent's proof of its certificate key is invalid");
          }
        }
        socket.send(JSON.stringify({ ready: true }));
        const stream = new WebSocketPacketStream(socket, `ws:${peer}`);
        core.addBackend(agentId, hs.identifiers, stream, {
          sendWindow: agentWindow,
          recvWindow: options.flowWindow,
        });
      } catch (err) {
        log.warn("agent link handshake failed", {
          peer,
          agentID: agentId,
          error: errorMessage(err),
        });
        try {
          socket.close(1008, errorMessage(err).slice(0, 120));
        } catch { /* closed */ }
      }
    };
    return response;
  };

  let server: Deno.HttpServer<Deno.NetAddr>;
  const bind = (material: TlsMaterial, port: number) => {
    if (!material.cert || !material.key) {
      throw new KnpError("CONFIG", "the WebSocket agent link needs a certificate and a key");
    }
    const decoder = new TextDecoder();
    return Deno.serve({
      hostname: options.hostname || "0.0.0.0",
      port,
      cert: decoder.decode(material.cert),
      key: decoder.decode(material.key),
      onListen() {},
    }, handler);
  };
  server = bind(currentTlsMaterial(options.tls), options.port);
  const port = server.addr.port;
  let unsubscribe = () => {};
  const draining = new Set<Promise<void>>();
  if (isTlsSource(options.tls)) {
    unsubscribe = options.tls.onChange(async (material) => {
      // Deno's TLS listener cannot swap certificates: close the listening socket (open links keep
      // theirs — shutdown() waits for them in the background) and bind anew.
      const old = server;
      draining.add(old.shutdown().catch(() => {}));
      for (let attempt = 0; attempt < 40; attempt++) {
        try {
          server = bind(material, port);
          log.info("WebSocket agent link reloaded its certificate", { port });
          return;
        } catch (err) {
          if (!(err instanceof Deno.errors.AddrInUse) || attempt === 39) {
            log.error("WebSocket agent link could not rebind after a certificate change", {
              port,
              error: errorMessage(err),
            });
            return;
          }
          await new Promise((r) => setTimeout(r, 25));
        }
      }
    });
  }
  return {
    port,
    async close() {
      unsubscribe();
      for (const ws of sockets) {
        try {
          ws.close(1001, "server shutting down");
        } catch { /* closed */ }
      }
      await Promise.all([server.shutdown(), ...draining]);
    },
  };
}
