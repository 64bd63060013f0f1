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
 * The public port is a {@linkcode TlsListener}: the upgrade and the frames run on its accepted
 * node:tls sockets with knp's own WebSocket code (transport/ws_accept.ts, server_websocket.ts), so
 * no byte crosses a second socket. Certificates reload without a restart of the process and
 * without closing the listening socket: the TLS context is swapped in place; open links continue.
 * With `keepalive` the server pings each agent and drops a silent one (its dials fail at once).
 * The per-socket code is the exported {@linkcode AgentLinkHandler}: the gRPC agent port hands it
 * the connections that did not negotiate ALPN "h2" (the fast link, see fast_link.ts).
 *
 * @module
 */

import type { X509Certificate } from "node:crypto";
import type { TLSSocket } from "node:tls";
import {
  AGENT_CERT_HEADER,
  newChallenge,
  proofPayload,
  verifyProof,
} from "@knp/transport/agent_proof";
import { errorMessage, KnpError } from "@knp/core/errors";
import { type Logger, nullLogger } from "@knp/core/log";
import type { KeepaliveOptions } from "@knp/transport/packet_stream";
import { ServerWebSocket } from "@knp/transport/server_websocket";
import {
  currentTlsMaterial,
  isTlsSource,
  type TlsMaterial,
  type TlsSource,
} from "@knp/transport/tls_files";
import { TlsListener } from "@knp/transport/tls_listener";
import {
  acceptResponse,
  readUpgradeRequest,
  refusalResponse,
  upgradeProblem,
  type UpgradeRequest,
} from "@knp/transport/ws_accept";
import { ZERO_MASK_HEADER } from "@knp/transport/ws_frame";
import { WebSocketPacketStream } from "@knp/transport/ws_stream";
import { type AgentAdmission, type AgentGate, handshakeAgent } from "./agent_handshake.ts";
import { type CertificateFacts, certificateFacts } from "./agent_auth.ts";
import type { ProxyServer } from "./proxy_server.ts";

/** Path of the agent link. */
export const AGENT_LINK_PATH = "/knp/v1/agent";

/** Options of {@linkcode AgentLinkHandler}: the link without its own listening socket. */
export interface AgentLinkOptions {
  core: ProxyServer;
  /** Server certificate and key; a CA makes the agent's certificate proof mandatory. */
  tls: TlsMaterial | TlsSource;
  /** Per-connection window this server grants. */
  flowWindow: number;
  /** @default 10000 */
  handshakeTimeoutMs?: number;
  /** Ping each agent and drop it when it stays silent (off by default). */
  keepalive?: KeepaliveOptions | undefined;
  logger?: Logger;
  /** Authentication, claim binding and connect rate of agents. */
  gate?: AgentGate | undefined;
  /** Largest packet an agent may send (and a frame's payload). @default 4 MiB + 1 KiB */
  maxMessageBytes?: number | undefined;
}

/** Options of {@linkcode serveAgentWebSocket}: the link's options and its own port. */
export interface AgentWebSocketOptions extends AgentLinkOptions {
  hostname?: string | undefined;
  port: number;
}

/** A running agent-link listener. */
export interface AgentWebSocketListener {
  port: number;
  close(): Promise<void>;
}

/**
 * The HTTP status of a refused handshake: 401 unauthenticated, 403 a claim it may not make, 503
 * with a retry hint over the connect rate, else 401 as before.
 */
function refusalStatus(err: Error): [number, string, number?] {
  const code = err instanceof KnpError ? err.code : undefined;
  const message = errorMessage(err);
  if (code === "PERMISSION_DENIED") return [403, message];
  if (code === "OVERLOADED") {
    const ms = (err as Error & { retryAfterMs?: number }).retryAfterMs ?? 1000;
    return [503, message, Math.max(1, Math.ceil(ms / 1000))];
  }
  return [401, message];
}

/** Writes a refusal; the connection stays open for another request. */
function refuse(
  socket: TLSSocket,
  status: number,
  message: string,
  retryAfterSeconds?: number,
): void {
  socket.write(refusalResponse(status, message, retryAfterSeconds));
}

/** Reads the next text message of a handshake, or fails after `ms`. */
function nextText(ws: ServerWebSocket, ms: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new KnpError("TIMEOUT", "handshake timed out")), ms);
    const done = (err?: Error, value?: Record<string, unknown>) => {
      clearTimeout(timer);
      ws.onmessage = null;
      ws.onclose = null;
      if (value) resolve(value);
      else reject(err);
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

/**
 * The agent link's HTTP side on accepted TLS sockets: upgrades, handshakes and registers agents.
 * {@linkcode serveAgentWebSocket} feeds it from its own port; another listener (the gRPC agent
 * port's non-HTTP/2 connections, see fast_link.ts) may feed it too.
 */
export class AgentLinkHandler {
  readonly #options: AgentLinkOptions;
  readonly #log: Logger;
  /** The open links. */
  readonly sockets = new Set<ServerWebSocket>();
  readonly #accepted = new Set<TLSSocket>();

  /** A handler serving sockets with `options`. */
  constructor(options: AgentLinkOptions) {
    this.#options = options;
    this.#log = options.logger ?? nullLogger;
  }

  get #timeoutMs(): number {
    return this.#options.handshakeTimeoutMs ?? 10_000;
  }

  /** Serves one accepted TLS connection: HTTP requests until one upgrades. */
  async accept(socket: TLSSocket): Promise<void> {
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    socket.on("error", () => socket.destroy());
    this.#accepted.add(socket);
    socket.once("close", () => this.#accepted.delete(socket));
    try {
      for (;;) {
        const req = await readUpgradeRequest(socket, this.#timeoutMs);
        if (await this.#handle(socket, req, peer)) return;
      }
    } catch (err) {
      // A client that hangs up between requests (after a refusal, say) is no news.
      const ended = socket.destroyed || socket.readableEnded;
      const log = ended ? this.#log.debug : this.#log.info;
      log.call(this.#log, "WebSocket agent link request failed", {
        peer,
        error: errorMessage(err),
      });
      socket.destroy();
    }
  }

  /** Answers one request; true once the connection became a WebSocket. */
  async #handle(socket: TLSSocket, req: UpgradeRequest, peer: string): Promise<boolean> {
    if (req.path !== AGENT_LINK_PATH) return refuse(socket, 404, "not found"), false;
    const problem = upgradeProblem(req);
    if (problem) return refuse(socket, ...problem), false;
    let refusal: Error = new Error("agent refused");
    const facts = this.#certificateFacts(req);
    const admission = await handshakeAgent(this.#options.core, {
      metadata: (name) => {
        const v = req.headers.get(name);
        return v === undefined ? [] : [v];
      },
      peer,
      reject: (err) => (refusal = err),
      ...facts,
    }, {
      flowWindow: this.#options.flowWindow,
      flowRequired: true,
      linkName: "WebSocket",
      logger: this.#log,
      gate: this.#options.gate,
    });
    const leaf = facts.certificate;
    if (!admission) return refuse(socket, ...refusalStatus(refusal)), false;
    // knp agents may then send frames with masking key 0 (see ZERO_MASK_HEADER).
    const key = req.headers.get("sec-websocket-key") ?? "";
    socket.write(await acceptResponse(key, [[ZERO_MASK_HEADER, "1"]]));
    // Pooled messages: the packets' consumers give them back (transport/message_pool.ts).
    const ws = new ServerWebSocket(socket, req.leftover, this.#options.maxMessageBytes, true);
    this.sockets.add(ws);
    socket.once("close", () => this.sockets.delete(ws));
    await this.#prove(ws, peer, admission, leaf);
    return true;
  }

  /** With a cluster CA, the agent's certificate chain must check out. */
  #certificateFacts(req: UpgradeRequest): CertificateFacts {
    const ca = currentTlsMaterial(this.#options.tls).ca;
    const chain = req.headers.get(AGENT_CERT_HEADER);
    return certificateFacts(chain === undefined ? undefined : atob(chain), ca);
  }

  /** Steps 2–4 of the handshake; the agent is registered once it proved its key. */
  async #prove(
    ws: ServerWebSocket,
    peer: string,
    admission: AgentAdmission,
    leaf: X509Certificate | undefined,
  ): Promise<void> {
    const { core } = this.#options;
    const challenge = newChallenge();
    try {
      ws.send(JSON.stringify({
        serverId: core.serverId,
        serverCount: core.serverCount,
        window: this.#options.flowWindow,
        challenge,
      }));
      const proof = await nextText(ws, this.#timeoutMs);
      if (leaf) {
        const payload = proofPayload(core.serverId, admission.agentId, challenge);
        if (typeof proof.signature !== "string" || !verifyProof(leaf, payload, proof.signature)) {
          throw new KnpError("HANDSHAKE", "the agent's proof of its certificate key is invalid");
        }
      }
      // nextText let go of the handlers; a close since then must not register a dead link (from
      // here to the stream's constructor nothing can arrive: events come from a later read).
      if (ws.readyState !== ws.OPEN) {
        throw new KnpError("HANDSHAKE", "link closed during the handshake");
      }
      ws.send(JSON.stringify({ ready: true }));
      const keepalive = this.#options.keepalive;
      admission.register(
        new WebSocketPacketStream(ws as unknown as WebSocket, `ws:${peer}`, {
          keepalive,
          maxMessageBytes: this.#options.maxMessageBytes,
        }),
      );
    } catch (err) {
      this.#log.warn("agent link handshake failed", {
        peer,
        agentID: admission.agentId,
        error: errorMessage(err),
      });
      try {
        ws.close(1008, errorMessage(err).slice(0, 120));
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

  /** Closes every link and destroys every socket it was given (a listener it shares closes). */
  close(): void {
    this.closeAll();
    for (const socket of this.#accepted) socket.destroy();
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
  const listener = await TlsListener.listen({
    hostname: options.hostname,
    port: options.port,
    tls: material,
    handshakeTimeoutMs: options.handshakeTimeoutMs ?? 10_000,
    onConnection: (socket) => void links.accept(socket),
    onHandshakeError: (err) => {
      log.info("TLS handshake failed on the WebSocket agent link", { error: err.message });
    },
  });
  const port = listener.port;
  const unsubscribe = isTlsSource(options.tls)
    ? options.tls.onChange((next) => {
      listener.updateTls(next);
      log.info("WebSocket agent link reloaded its certificate", { port });
    })
    : () => {};
  return {
    port,
    async close() {
      unsubscribe();
      links.closeAll();
      await listener.close();
    },
  };
}
