/**
 * The wire words of the fast-link negotiation (issue 14 item 3) as the agent reads them: its
 * offer `knp-links: websocket` in the gRPC request metadata, and a knp server's answer
 * `knp-link: websocket` with `knp-link-port: <port>` in the response headers (or, when the server
 * ends the call at once, in a trailers-only response, which grpc-js reports as the status's
 * metadata). Upstream servers ignore the offer and never answer it.
 *
 * @module
 */

import { KNP_LINK_KEY, KNP_LINK_PORT_KEY, WEBSOCKET_LINK } from "@knp/proto";
import { KnpError } from "@knp/core/errors";

/** A server's answer to the offer: continue on the WebSocket agent link at `port`. */
export interface LinkSwitch {
  link: "websocket";
  /** The port to connect to; NaN when the server's value is not a port (see `problem`). */
  port: number;
  /** Why `port` is unusable, when it is. */
  problem?: string;
}

/** The switch named by response headers (`headers(key)` lists a key's values), if any. */
export function linkSwitchOf(headers: (key: string) => string[]): LinkSwitch | undefined {
  const links = headers(KNP_LINK_KEY).map((v) => v.trim().toLowerCase());
  if (!links.includes(WEBSOCKET_LINK)) return undefined;
  const raw = headers(KNP_LINK_PORT_KEY);
  const port = raw.length === 1 && /^\d{1,5}$/.test(raw[0]!.trim()) ? Number(raw[0]) : NaN;
  if (port >= 1 && port <= 65535) return { link: "websocket", port };
  return {
    link: "websocket",
    port: NaN,
    problem: `the server's ${KNP_LINK_PORT_KEY} header is not one port: [${raw}]`,
  };
}

/** What grpc-js's `Metadata` offers that is read here. */
interface MetadataLike {
  get(key: string): unknown[];
}

function isMetadata(value: unknown): value is MetadataLike {
  return typeof value === "object" && value !== null &&
    typeof (value as { get?: unknown }).get === "function";
}

/**
 * The switch named by a failed call's trailers (a trailers-only response carries the server's
 * headers there): looked for on `err` and its causes.
 */
export function linkSwitchInError(err: unknown): LinkSwitch | undefined {
  const decoder = new TextDecoder();
  for (let e = err, depth = 0; typeof e === "object" && e !== null && depth < 4; depth++) {
    const metadata = (e as { metadata?: unknown }).metadata;
    if (isMetadata(metadata)) {
      const found = linkSwitchOf((key) =>
        metadata.get(key).map((v) => typeof v === "string" ? v : decoder.decode(v as Uint8Array))
      );
      if (found) return found;
    }
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/** HTTP statuses of a WebSocket upgrade a knp server refuses with (see ws_agent_listener.ts). */
const REFUSAL_STATUSES = new Set([401, 403, 503]);
/** Close code of a knp server that refused the agent's proof during the link's handshake. */
const POLICY_CLOSE = 1008;

/**
 * Whether a failed WebSocket attempt is the server's refusal (unauthenticated, permission
 * denied, overloaded): reported as it is. Anything else (TLS, an upgrade nobody answers as a
 * knp server would, a timeout) means the link is not there, and the agent falls back to gRPC.
 */
export function isRefusal(err: unknown): boolean {
  for (let e = err, depth = 0; typeof e === "object" && e !== null && depth < 4; depth++) {
    if (e instanceof KnpError) {
      if (["UNAUTHENTICATED", "PERMISSION_DENIED", "OVERLOADED"].includes(e.code)) return true;
      if (
        e.code === "HANDSHAKE" && e.message.includes(`closed the WebSocket link (${POLICY_CLOSE}`)
      ) {
        return true;
      }
    }
    const status = (e as { status?: unknown }).status;
    if (typeof status === "number" && REFUSAL_STATUSES.has(status)) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}
