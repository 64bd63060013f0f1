/**
 * Connects the agent to a knp server over the TLS WebSocket agent link (see
 * server/ws_agent_listener.ts for the handshake). Every attempt reads the current TLS material,
 * so rotated certificates are used from the next connection on.
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
} from "../proto/header.ts";
import { AGENT_CERT_HEADER, proofPayload, signProof } from "../internal/agent_proof.ts";
import { errorMessage, KnpError } from "../internal/errors.ts";
import {
  currentTlsMaterial,
  isTlsSource,
  type TlsMaterial,
  type TlsSource,
} from "../internal/tls_files.ts";
import { WebSocketPacketStream } from "../internal/ws_stream.ts";
import type { ServerConnection, ServerConnector } from "./client_set.ts";

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
}

function base64(text: string): string {
  const bytes = new TextEncoder().encode(text);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

/** Builds a {@linkcode ServerConnector} for the WebSocket link. */
export function webSocketConnector(options: WebSocketConnectorOptions): ServerConnector {
  const window = options.flowWindow ?? 1 << 20;
  return async (): Promise<ServerConnection> => {
    if (isTlsSource(options.tls)) await options.tls.refresh?.();
    const material = currentTlsMaterial(options.tls);
    const decoder = new TextDecoder();
    const ca = material.ca && decoder.decode(material.ca);
    const cert = material.cert && decoder.decode(material.cert);
    const key = material.key && decoder.decode(material.key);
    const client = Deno.createHttpClient({
      ...(ca ? { caCerts: [ca] } : {}),
      ...(cert && key ? { cert, key } : {}),
    });
    const headers: Record<string, string> = {
      [AGENT_ID_KEY]: options.agentId,
      [AGENT_IDENTIFIERS_KEY]: options.agentIdentifiers,
      [FLOW_CONTROL_KEY]: formatFlowControl(window),
    };
    if (cert) headers[AGENT_CERT_HEADER] = base64(cert);
    if (options.tokenPath) {
      headers[AUTHORIZATION_KEY] = BEARER_PREFIX + await Deno.readTextFile(options.tokenPath);
    }
    const host = options.host.includes(":") ? `[${options.host}]` : options.host;
    const url = `wss://${host}:${options.port}${AGENT_LINK_PATH}`;
    const ws = new WebSocket(url, { client, headers } as unknown as string[]);
    ws.binaryType = "arraybuffer";
    const close = () => {
      try {
        ws.close(1000);
      } catch { /* closed */ }
      client.close();
    };
    try {
      const messages = handshakeMessages(ws, options.handshakeTimeoutMs ?? 15_000);
      const hello = await messages.next();
      const serverId = hello.serverId;
      const serverCount = hello.serverCount;
      const serverWindow = hello.window;
      if (
        typeof serverId !== "string" || typeof serverCount !== "number" ||
        typeof serverWindow !== "number" || typeof hello.challenge !== "string"
      ) {
        throw new KnpError("HANDSHAKE", "malformed hello from the server");
      }
      const signature = key
        ? signProof(key, proofPayload(serverId, options.agentId, hello.challenge))
        : "";
      ws.send(JSON.stringify({ signature }));
      const ready = await messages.next();
      if (ready.ready !== true) {
        throw new KnpError("HANDSHAKE", "the server did not accept the agent");
      }
      messages.stop();
      const stream = new WebSocketPacketStream(ws, url);
      return {
        stream,
        serverId,
        serverCount,
        flow: { sendWindow: serverWindow, recvWindow: window },
        close,
      };
    } catch (err) {
      close();
      throw err instanceof KnpError
        ? err
        : new KnpError("HANDSHAKE", `WebSocket link to ${url}: ${errorMessage(err)}`, {
          cause: err,
        });
    }
  };
}

/** Yields handshake text messages one at a time; every wait shares one deadline. */
function handshakeMessages(ws: WebSocket, timeoutMs: number) {
  const queue: Record<string, unknown>[] = [];
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const deadline = setTimeout(() => {
    failure = new KnpError("TIMEOUT", `no WebSocket handshake within ${timeoutMs} ms`);
    notify();
  }, timeoutMs);
  ws.onmessage = (e) => {
    try {
      if (typeof e.data !== "string") throw new Error("binary message during the handshake");
      queue.push(JSON.parse(e.data));
    } catch (err) {
      failure = new KnpError("HANDSHAKE", `bad handshake message: ${errorMessage(err)}`);
    }
    notify();
  };
  ws.onclose = (e) => {
    failure ??= new KnpError(
      "HANDSHAKE",
      `the server closed the WebSocket link (${e.code}${e.reason ? ": " + e.reason : ""}); ` +
        "see the server log for the reason",
    );
    notify();
  };
  ws.onerror = () => {};
  return {
    async next(): Promise<Record<string, unknown>> {
      while (queue.length === 0) {
        if (failure) {
          clearTimeout(deadline);
          throw failure;
        }
        await new Promise<void>((resolve) => (wake = resolve));
      }
      return queue.shift()!;
    },
    stop() {
      clearTimeout(deadline);
      ws.onmessage = null;
      ws.onclose = null;
    },
  };
}
