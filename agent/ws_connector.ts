/**
 * Connects the agent to a knp server over the TLS WebSocket agent link (see
 * server/ws_agent_listener.ts for the handshake). Every attempt reads the current TLS material,
 * so rotated certificates are used from the next connection on.
 *
 * The link uses knp's own WebSocket client (transport/ws_client.ts), not Deno's `WebSocket`: that
 * one leaves Nagle's algorithm on, which cost every dial a delayed ACK (~40 ms). The agent's
 * certificate travels in the `knp-agent-cert` header and its key signs the server's challenge; it
 * is not presented in the TLS handshake (the server cannot ask for it).
 *
 * @module
 */

import {
  AGENT_ID_KEY,
  AGENT_IDENTIFIERS_KEY,
  AUTHORIZATION_KEY,
  BEARER_PREFIX,
  FLOW_CONTROL_KEY,
  formatFlowControl,
} from "@knp/proto";
import { AGENT_CERT_HEADER, proofPayload, signProof } from "@knp/transport/agent_proof";
import { errorMessage, KnpError } from "@knp/core/errors";
import {
  currentTlsMaterial,
  isTlsSource,
  type TlsMaterial,
  type TlsSource,
} from "@knp/transport/tls_files";
import {
  type ClientWebSocket,
  connectWebSocket,
  type ConnectWebSocketOptions,
  WebSocketHandshakeError,
  type WebSocketSubset,
} from "@knp/transport/ws_client";
import type { WebSocketCloseEvent } from "@knp/transport/ws_events";
import { keepaliveFor } from "@knp/transport/keepalive";
import { WebSocketPacketStream } from "@knp/transport/ws_stream";
import type { ServerAddress, ServerConnection, ServerConnector } from "./client_set.ts";
import { type EgressProxy, proxyFor } from "./egress_proxy.ts";

/** Path of the agent link (as the server serves it). */
const AGENT_LINK_PATH = "/knp/v1/agent";

/** Options of {@linkcode webSocketConnector}. */
export interface WebSocketConnectorOptions {
  host: string;
  port: number;
  agentId: string;
  agentIdentifiers: string;
  /** CA to verify the server; the agent certificate and key prove this agent's identity. */
  tls: TlsMaterial | TlsSource;
  tokenPath?: string;
  /** Per-connection window this agent grants. @default 1048576 */
  flowWindow?: number;
  /** Bound on the whole handshake. @default 15000 */
  handshakeTimeoutMs?: number;
  /**
   * `--keepalive-time`: ping the server this often and drop the link when nothing answers within
   * `min(time, 20 s)` of a ping (see transport/keepalive.ts). Off when absent.
   */
  keepaliveTimeMs?: number | undefined;
  /** The egress proxy; the link tunnels through it unless its bypass list names the server. */
  proxy?: EgressProxy | undefined;
  /** `--alpn-proto`: ALPN protocols offered before `http/1.1`. @default [] */
  alpnProtocols?: readonly string[] | undefined;
}

function base64(text: string): string {
  const bytes = new TextEncoder().encode(text);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

/** The upgrade request's headers: the gRPC link's metadata plus the agent's certificate. */
async function linkHeaders(
  options: WebSocketConnectorOptions,
  cert: string | undefined,
  window: number,
): Promise<Record<string, string>> {
  const headers: Record<string, string> = {
    [AGENT_ID_KEY]: options.agentId,
    [AGENT_IDENTIFIERS_KEY]: options.agentIdentifiers,
    [FLOW_CONTROL_KEY]: formatFlowControl(window),
  };
  if (cert) headers[AGENT_CERT_HEADER] = base64(cert);
  if (options.tokenPath) {
    headers[AUTHORIZATION_KEY] = BEARER_PREFIX + await Deno.readTextFile(options.tokenPath);
  }
  return headers;
}

/** Opens the WebSocket; a refusal by the server becomes a `HANDSHAKE` error with its reason. */
async function openLink(
  url: string,
  ca: string | undefined,
  headers: Record<string, string>,
  deadline: AbortSignal,
  timeoutMs: number,
  via: Pick<ConnectWebSocketOptions, "proxy" | "serverName" | "alpnProtocols">,
): Promise<ClientWebSocket> {
  try {
    return await connectWebSocket(url, {
      ...(ca ? { caCerts: [ca] } : {}),
      ...via,
      headers,
      // The packets' consumers give large messages back (transport/message_pool.ts).
      pooledMessages: true,
      signal: deadline,
      // The caller's deadline is the bound; this one only has to be later.
      timeoutMs: timeoutMs + 1_000,
    });
  } catch (err) {
    if (err instanceof WebSocketHandshakeError && err.status !== 0) {
      // The server's reason (a 401 body, say) is in the message.
      const refusal: KnpError & { retryAfterMs?: number } = new KnpError(
        err.status === 503 ? "OVERLOADED" : "HANDSHAKE",
        `the server refused the WebSocket link to ${url}: ${err.statusLine}` +
          (err.body ? `: ${err.body}` : ""),
        { cause: err },
      );
      // A 503's Retry-After: the client set waits at least that long before the next attempt.
      if (err.retryAfterMs !== undefined) refusal.retryAfterMs = err.retryAfterMs;
      throw refusal;
    }
    throw err;
  }
}

/** The part of the link's socket the handshake uses. */
export type HandshakeSocket = Pick<ClientWebSocket, "send" | "onmessage" | "onclose" | "onerror">;

/** What the server said in its hello. */
export interface ServerHello {
  serverId: string;
  serverCount: number;
  window: number;
  /**
   * Hands the link over: call it once the packet stream has set the socket's handlers. It passes
   * them, in order, what arrived after `ready` until then (a packet can come in the same read as
   * `ready`, or in a read that completes before the stream exists), and the close if the link
   * closed meanwhile. Until it runs, the handshake's handlers stay in place and keep it all.
   */
  handOff(): void;
}

/** Steps 2–4 of the handshake: read the hello, prove the key, wait for `ready`. */
export async function exchangeHello(
  ws: HandshakeSocket,
  deadline: AbortSignal,
  agentId: string,
  key: string | undefined,
): Promise<ServerHello> {
  const messages = handshakeMessages(ws, deadline);
  const hello = await messages.next();
  const { serverId, serverCount, window, challenge } = hello;
  if (
    typeof serverId !== "string" || typeof serverCount !== "number" ||
    typeof window !== "number" || typeof challenge !== "string"
  ) {
    throw new KnpError("HANDSHAKE", "malformed hello from the server");
  }
  const signature = key ? signProof(key, proofPayload(serverId, agentId, challenge)) : "";
  ws.send(JSON.stringify({ signature }));
  const ready = await messages.next();
  if (ready.ready !== true) {
    throw new KnpError("HANDSHAKE", "the server did not accept the agent");
  }
  return { serverId, serverCount, window, handOff: messages.stop() };
}

/** Builds a {@linkcode ServerConnector} for the WebSocket link. */
export function webSocketConnector(options: WebSocketConnectorOptions): ServerConnector {
  const window = options.flowWindow ?? 1 << 20;
  // `address`: one of several the host names; the certificate is verified against its name.
  return async (address?: ServerAddress): Promise<ServerConnection> => {
    if (isTlsSource(options.tls)) await options.tls.refresh?.();
    const material = currentTlsMaterial(options.tls);
    const decoder = new TextDecoder();
    const ca = material.ca && decoder.decode(material.ca);
    const key = material.key && decoder.decode(material.key);
    const cert = material.cert && decoder.decode(material.cert);
    const headers = await linkHeaders(options, cert, window);
    const to = address?.host ?? options.host;
    const host = to.includes(":") ? `[${to}]` : to;
    const url = `wss://${host}:${options.port}${AGENT_LINK_PATH}`;
    // One deadline bounds the whole handshake: connect, TLS, upgrade and the three messages.
    const timeoutMs = options.handshakeTimeoutMs ?? 15_000;
    const deadline = new AbortController();
    const timer = setTimeout(() => {
      deadline.abort(new KnpError("TIMEOUT", `no WebSocket handshake within ${timeoutMs} ms`));
    }, timeoutMs);
    let ws: ClientWebSocket | undefined;
    const close = () => {
      try {
        ws?.close(1000);
      } catch { /* closed */ }
    };
    try {
      const proxy = proxyFor(options.proxy, `${host}:${options.port}`);
      const via = { proxy, serverName: address?.serverName, alpnProtocols: options.alpnProtocols };
      ws = await openLink(url, ca, headers, deadline.signal, timeoutMs, via);
      const hello = await exchangeHello(ws, deadline.signal, options.agentId, key);
      clearTimeout(timer);
      // WebSocketPacketStream takes a WebSocket but uses only the members WebSocketSubset lists;
      // the assignment checks that ClientWebSocket has them.
      const link: WebSocketSubset = ws;
      const keepalive = keepaliveFor(options.keepaliveTimeMs ?? 0);
      const stream = new WebSocketPacketStream(link as WebSocket, url, { keepalive });
      // Packets the server sent right behind `ready` go first.
      hello.handOff();
      return {
        stream,
        serverId: hello.serverId,
        serverCount: hello.serverCount,
        flow: { sendWindow: hello.window, recvWindow: window },
        link: "websocket",
        close,
      };
    } catch (err) {
      clearTimeout(timer);
      close();
      throw err instanceof KnpError
        ? err
        : new KnpError("HANDSHAKE", `WebSocket link to ${url}: ${errorMessage(err)}`, {
          cause: err,
        });
    }
  };
}

/** A binary message's data (an `ArrayBuffer`, or a view of a pooled buffer). */
function isBinary(data: unknown): data is ArrayBuffer | Uint8Array<ArrayBuffer> {
  return data instanceof ArrayBuffer || data instanceof Uint8Array;
}

/**
 * Yields handshake text messages one at a time; every wait ends when `deadline` aborts. After
 * `ready`, binary messages and the close are kept for the packet stream (see `stop`).
 */
function handshakeMessages(ws: HandshakeSocket, deadline: AbortSignal) {
  const queue: Record<string, unknown>[] = [];
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const onDeadline = () => {
    failure ??= deadline.reason;
    notify();
  };
  if (deadline.aborted) onDeadline();
  else deadline.addEventListener("abort", onDeadline, { once: true });
  let ready = false;
  const early: (ArrayBuffer | Uint8Array<ArrayBuffer>)[] = [];
  let closed: WebSocketCloseEvent | undefined;
  ws.onmessage = (e) => {
    if (ready && isBinary(e.data)) return void early.push(e.data);
    try {
      if (typeof e.data !== "string") throw new Error("binary message during the handshake");
      const message = JSON.parse(e.data) as Record<string, unknown>;
      if (message.ready === true) ready = true;
      queue.push(message);
    } catch (err) {
      failure ??= new KnpError("HANDSHAKE", `bad handshake message: ${errorMessage(err)}`);
    }
    notify();
  };
  ws.onclose = (e) => {
    closed = e;
    failure ??= new KnpError(
      "HANDSHAKE",
      `the server closed the WebSocket link (${e.code}${e.reason ? ": " + e.reason : ""}); ` +
        "see the server log for the reason",
    );
    notify();
  };
  ws.onerror = () => {};
  return {
    /** The next message; a failure (bad message, close, deadline) ends the handshake first. */
    async next(): Promise<Record<string, unknown>> {
      while (!failure && queue.length === 0) await new Promise<void>((r) => (wake = r));
      if (failure) {
        deadline.removeEventListener("abort", onDeadline);
        throw failure;
      }
      return queue.shift()!;
    },
    /** Ends the handshake; returns {@linkcode ServerHello.handOff}. */
    stop(): () => void {
      deadline.removeEventListener("abort", onDeadline);
      return () => {
        for (const data of early.splice(0)) ws.onmessage?.({ type: "message", data });
        if (closed) ws.onclose?.(closed);
      };
    },
  };
}
