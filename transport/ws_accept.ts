/**
 * The server side of the RFC 6455 opening handshake on an accepted byte socket (a node:tls
 * socket): read the upgrade request's head ({@linkcode readUpgradeRequest}), then answer with
 * {@linkcode acceptResponse} (101) or {@linkcode refusalResponse}. No HTTP server is involved, so
 * the frames that follow run on the same socket (see server_websocket.ts).
 *
 * @module
 */

import type { Duplex } from "node:stream";
import { KnpError } from "@knp/core/errors";
import { acceptFor } from "./ws_handshake.ts";

/** Largest request head accepted. */
const MAX_HEAD_BYTES = 16 * 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** An upgrade request's head and the bytes that followed it in the same reads. */
export interface UpgradeRequest {
  /** The request method (an upgrade is a GET). */
  method: string;
  /** The request target's path (no query). */
  path: string;
  /** Header values by lowercase name (repeated headers joined with ", "). */
  headers: Map<string, string>;
  /** Bytes after the head: the client's first frames, if it sent any already. */
  leftover: Uint8Array;
}

function headEnd(bytes: Uint8Array): number {
  for (let i = 3; i < bytes.length; i++) {
    if (bytes[i] === 10 && bytes[i - 1] === 13 && bytes[i - 2] === 10 && bytes[i - 3] === 13) {
      return i + 1;
    }
  }
  return -1;
}

/** Parses a request head. @throws {KnpError} `HANDSHAKE` when it is not HTTP/1.1 */
export function parseRequestHead(text: string): Omit<UpgradeRequest, "leftover"> {
  const lines = text.split("\r\n");
  const [method, target, version] = (lines[0] ?? "").split(" ");
  if (!method || !target || !version?.startsWith("HTTP/1.")) {
    throw new KnpError("HANDSHAKE", "malformed HTTP request line");
  }
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    if (line === "") continue;
    const colon = line.indexOf(":");
    if (colon <= 0) throw new KnpError("HANDSHAKE", "malformed HTTP header line");
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    const prev = headers.get(name);
    headers.set(name, prev === undefined ? value : `${prev}, ${value}`);
  }
  const q = target.indexOf("?");
  return { method, path: q < 0 ? target : target.slice(0, q), headers };
}

/**
 * Reads the head of the request on `socket`; the socket is left paused with no `data` listener
 * of this function's.
 *
 * @throws {KnpError} `HANDSHAKE` on a malformed or oversized head or an early end; `TIMEOUT`
 */
export function readUpgradeRequest(socket: Duplex, timeoutMs: number): Promise<UpgradeRequest> {
  return new Promise((resolve, reject) => {
    let buffered = new Uint8Array(0);
    const timer = setTimeout(
      () => done(new KnpError("TIMEOUT", `no upgrade request within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const onEnd = () => done(new KnpError("HANDSHAKE", "connection ended before the request"));
    const onData = (chunk: Uint8Array) => {
      const next = new Uint8Array(buffered.length + chunk.length);
      next.set(buffered);
      next.set(chunk, buffered.length);
      buffered = next;
      const end = headEnd(buffered);
      if (end < 0) {
        if (buffered.length > MAX_HEAD_BYTES) {
          done(new KnpError("HANDSHAKE", "request head too large"));
        }
        return;
      }
      try {
        const head = parseRequestHead(decoder.decode(buffered.subarray(0, end - 4)));
        done(undefined, { ...head, leftover: buffered.slice(end) });
      } catch (err) {
        done(err as Error);
      }
    };
    const done = (err?: Error, value?: UpgradeRequest) => {
      clearTimeout(timer);
      socket.pause();
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.off("close", onEnd);
      if (value) resolve(value);
      else reject(err);
    };
    socket.on("data", onData);
    socket.on("end", onEnd);
    socket.on("close", onEnd);
    socket.resume();
  });
}

/** Why a request is no WebSocket upgrade (status and message), or undefined when it is one. */
export function upgradeProblem(req: UpgradeRequest): [number, string] | undefined {
  if (req.method !== "GET") return [405, "the WebSocket link needs a GET"];
  const tokens = (name: string) =>
    (req.headers.get(name) ?? "").toLowerCase().split(",").map((t) => t.trim());
  if (!tokens("upgrade").includes("websocket") || !tokens("connection").includes("upgrade")) {
    return [426, "the knp agent link needs a WebSocket upgrade"];
  }
  if (req.headers.get("sec-websocket-version") !== "13") {
    return [426, "unsupported WebSocket version (13 only)"];
  }
  if (!req.headers.get("sec-websocket-key")) return [400, "missing Sec-WebSocket-Key"];
  return undefined;
}

/** The 101 answer to a request whose `Sec-WebSocket-Key` is `key`, with extra `headers`. */
export async function acceptResponse(
  key: string,
  headers: readonly [string, string][] = [],
): Promise<Uint8Array> {
  const extra = headers.map(([name, value]) => `${name}: ${value}\r\n`).join("");
  return encoder.encode(
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      `Sec-WebSocket-Accept: ${await acceptFor(key)}\r\n${extra}\r\n`,
  );
}

const REASONS: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  426: "Upgrade Required",
  503: "Service Unavailable",
};

/**
 * A plain-text refusal that closes the connection; `retryAfterSeconds` adds a `Retry-After`
 * header (a refusal over the connect rate).
 */
export function refusalResponse(
  status: number,
  message: string,
  retryAfterSeconds?: number,
): Uint8Array {
  const body = encoder.encode(message + "\n");
  let extra = status === 426 ? "Upgrade: websocket\r\n" : "";
  if (retryAfterSeconds !== undefined) extra += `Retry-After: ${retryAfterSeconds}\r\n`;
  return new Uint8Array([
    ...encoder.encode(
      `HTTP/1.1 ${status} ${REASONS[status] ?? "Error"}\r\n${extra}` +
        `Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${body.length}\r\n` +
        "Connection: close\r\n\r\n",
    ),
    ...body,
  ]);
}
