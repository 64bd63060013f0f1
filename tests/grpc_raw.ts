/**
 * Raw gRPC streams to a proxy server, below our own client and agent code: the tests use them to
 * send what those never would (malformed packets, missing metadata). Messages are raw bytes.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import * as grpc from "@grpc/grpc-js";
import type { ServerProcess } from "./framework.ts";

/** A plaintext client of a server's frontend on its Unix socket. */
export function frontendClient(udsPath: string): grpc.Client {
  return new grpc.Client(`unix:${udsPath}`, grpc.credentials.createInsecure());
}

/** An mTLS client of a server's agent port, with the test PKI's client certificate. */
export function agentPortClient(server: ServerProcess): grpc.Client {
  const pem = (p: string) => Buffer.from(Deno.readFileSync(p));
  return new grpc.Client(
    `localhost:${server.agentPort}`,
    grpc.credentials.createSsl(
      pem(server.pki.caCert),
      pem(server.pki.clientKey),
      pem(server.pki.clientCert),
    ),
  );
}

/** Options of {@linkcode rawBidiStream}. */
export interface RawStreamOptions {
  /** Request metadata. */
  metadata?: Record<string, string>;
  /** One message to send: at once, or once the server's response headers arrive (`afterHeaders`). */
  message?: Uint8Array;
  /** Send `message` only after the server's response headers. */
  afterHeaders?: boolean;
  /** Reject if no status arrives within this many ms; without it, wait as long as it takes. */
  timeoutMs?: number;
}

/**
 * Opens a bidirectional stream of `method` (e.g. `"/ProxyService/Proxy"`), ignores what it
 * receives, and resolves with the call's final status; then closes `client`.
 *
 * @param client The client to call on (closed when the status arrives).
 * @param method The full method path.
 * @param options Metadata, the message to send and a time limit.
 * @returns The final status.
 */
export function rawBidiStream(
  client: grpc.Client,
  method: string,
  options: RawStreamOptions = {},
): Promise<grpc.StatusObject> {
  const md = new grpc.Metadata();
  for (const [key, value] of Object.entries(options.metadata ?? {})) md.set(key, value);
  const call = client.makeBidiStreamRequest(
    method,
    (b: Uint8Array) => Buffer.from(b),
    (b: Buffer) => b,
    md,
  );
  const { timeoutMs } = options;
  return new Promise((resolve, reject) => {
    const timer = timeoutMs === undefined ? undefined : setTimeout(
      () => reject(new Error(`no status within ${timeoutMs / 1000} s`)),
      timeoutMs,
    );
    call.on("data", () => {});
    call.on("error", () => {});
    call.on("status", (s: grpc.StatusObject) => {
      clearTimeout(timer);
      client.close();
      resolve(s);
    });
    const message = options.message;
    if (message !== undefined) {
      if (options.afterHeaders) call.on("metadata", () => call.write(message));
      else call.write(message);
    }
  });
}
