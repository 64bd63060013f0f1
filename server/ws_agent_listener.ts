/**
 * The knp agent link over a TLS WebSocket (`--knp-websocket-port`): faster than gRPC under Deno
 * and able to pass HTTP proxies that break gRPC. It carries the same Packets with the same
 * semantics; per-connection flow control is mandatory here.
 *
 * Handshake, all bounded by `handshakeTimeoutMs`:
 * 1. `GET /knp/v1/agent` upgrade with the gRPC link's metadata as headers (`agentid`,
 *    `agentidentifiers`, `knp-flow-control`, optional `authorization`) plus `knp-agent-cert`.
 *    With a cluster CA, the certificate chain must check out (see transport/agent_proof.ts).
 *    The metadata goes through the same handshake as the gRPC link's (agent_handshake.ts).
 * 2. Server → agent text: `{"serverId","serverCount","window","challenge"}`.
 * 3. Agent → server text: `{"signature"}` over the challenge; verified with the certificate.
 * 4. Server → agent text: `{"ready":true}`; binary Packet frames from then on.
 *
 * Certificates reload without a restart of the process and without closing the listening socket:
 * the TLS context is swapped in place (see tls_front.ts); open links continue.
 *
 * @module
 */

import type { X509Certificate } from "node:crypto";
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
import { type AgentAdmission, handshakeAgent } from "./agent_handshake.ts";
import type { ProxyServer } from "./proxy_server.ts";
import { TlsFront } from "./tls_front.ts";

/** Path of the agent link. */
export const AGENT_LINK_PATH = "/knp/v1/agent";

/** Options of {@linkcode serveAgentWebSocket}. */
export interface AgentWebSocketOptions {
  core: ProxyServer;
  hostname?: string | undefined;
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

/** The agent link's HTTP side: upgrades, handshakes and registers agents. */
class AgentLinkHandler {
  readonly #options: AgentWebSocketOptions;
  readonly #log: Logger;
  readonly sockets = new Set<WebSocket>();

  constructor(options: AgentWebSocketOptions) {
    this.#options = options;
    this.#log = options.logger ?? nullLogger;
  }

  /** Answers one HTTP request on the link's port. */
  handle(req: Request, peer: string): Response {
    if (new URL(req.url).pathname !== AGENT_LINK_PATH) return reject(404, "not found");
    if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return reject(426, "the knp agent link needs a WebSocket upgrade");
    }
    let refusal: Response | undefined;
    let leaf: X509Certificate | undefined;
    const admission = handshakeAgent(this.#options.core, {
      metadata: (name) => {
        const v = req.headers.get(name);
        return v === null ? [] : [v];
      },
      peer,
      reject: (err) => (refusal = reject(401, errorMessage(err))),
      check: () => (leaf = this.#verifyChain(req)),
    }, {
      flowWindow: this.#options.flowWindow,
      flowRequired: true,
      linkName: "WebSocket",
      logger: this.#log,
    });
    if (!admission) return refusal ?? reject(401, "agent rejected");
    const { socket, response } = Deno.upgradeWebSocket(req, { idleTimeout: 0 });
    this.sockets.add(socket);
    socket.addEventListener("close", () => this.sockets.delete(socket));
    socket.onopen = () => this.#prove(socket, peer, admission, leaf);
    return response;
  }

  /** With a cluster CA, the agent's certificate chain must check out; returns its leaf. */
  #verifyChain(req: Request): X509Certificate | undefined {
    const ca = currentTlsMaterial(this.#options.tls).ca;
    if (!ca) return undefined;
    const chain = req.headers.get(AGENT_CERT_HEADER);
    if (!chain) throw new KnpError("HANDSHAKE", "the agent sent no certificate");
    return verifyAgentChain(atob(chain), ca);
  }

  /** Steps 2–4 of the handshake; the agent is registered once it proved its key. */
  async #prove(
    socket: WebSocket,
    peer: string,
    admission: AgentAdmission,
    leaf: X509Certificate | undefined,
  ): Promise<void> {
    const { core } = this.#options;
    const challenge = newChallenge();
    try {
      socket.send(JSON.stringify({
        serverId: core.serverId,
        serverCount: core.serverCount,
        window: this.#options.flowWindow,
        challenge,
      }));
      const proof = await nextText(socket, this.#options.handshakeTimeoutMs ?? 10_000);
      if (leaf) {
        const payload = proofPayload(core.serverId, admission.agentId, challenge);
        if (typeof proof.signature !== "string" || !verifyProof(leaf, payload, proof.signature)) {
          throw new KnpError("HANDSHAKE", "the agent's proof of its certificate key is invalid");
        }
      }
      socket.send(JSON.stringify({ ready: true }));
      admission.register(new WebSocketPacketStream(socket, `ws:${peer}`));
    } catch (err) {
      this.#log.warn("agent link handshake failed", {
        peer,
        agentID: admission.agentId,
        error: errorMessage(err),
      });
      try {
        socket.close(1008, errorMessage(err).slice(0, 120));
      } catch { /* closed */ }
    }
  }

  /** Closes every link (shutdown). */
  closeAll(): void {
    for (const ws of this.sockets) {
      try {
        ws.close(1001, "server shutting down");
      } catch { /* closed */ }
    }
  }
}

/** Serves the agent link. @throws {Error} when the port cannot be bound */
export async function serveAgentWebSocket(
  options: AgentWebSocketOptions,
): Promise<AgentWebSocketListener> {
  const log = options.logger ?? nullLogger;
  const material = currentTlsMaterial(options.tls);
  if (!material.cert || !material.key) {
    throw new KnpError("CONFIG", "the WebSocket agent link needs a certificate and a key");
  }
  const links = new AgentLinkHandler(options);
  const front = await TlsFront.start({
    hostname: options.hostname,
    port: options.port,
    tls: material,
    handshakeTimeoutMs: options.handshakeTimeoutMs ?? 10_000,
    handler: (req, peer) => links.handle(req, peer),
    logger: log,
  });
  const port = front.port;
  const unsubscribe = isTlsSource(options.tls)
    ? options.tls.onChange((next) => {
      front.updateTls(next);
      log.info("WebSocket agent link reloaded its certificate", { port });
    })
    : () => {};
  return {
    port,
    async close() {
      unsubscribe();
      links.closeAll();
      await front.close();
    },
  };
}
