/**
 * The TLS listener of the native HTTP/2 transport: node:tls (Deno's own TLS cannot ask for client
 * certificates), ALPN `h2` (and `http/1.1` for an `onOtherProtocol` handler, which then gets every
 * connection that did not negotiate `h2`), client certificates required or only requested (then
 * each connection carries the client's TLS facts, and `acceptClient` may refuse it before HTTP/2
 * sees a byte), hot-reloaded material, `TCP_NODELAY`; every accepted h2 socket becomes bytes via
 * `fromNodeSocket`.
 *
 * @module
 */

import type { Socket } from "node:net";
import { createServer, type DetailedPeerCertificate, type TLSSocket } from "node:tls";
import { fromNodeSocket } from "../byte_socket.ts";
import type { PeerTls } from "../grpc_stream.ts";
import { currentTlsMaterial, isTlsSource } from "../tls_files.ts";
import { secureContextOptions } from "../tls_policy.ts";
import type { Accepted, Acceptor, ServeH2GrpcOptions } from "./serve.ts";
import { splitHostPort } from "./serve.ts";

const PEM_LINE = /.{1,64}/g;

function pemOf(der: Uint8Array): string {
  const lines = der.toBase64().match(PEM_LINE)!.join("\n");
  return `-----BEGIN CERTIFICATE-----\n${lines}\n-----END CERTIFICATE-----\n`;
}

/** The client's chain as PEM, leaf first. */
function peerChain(socket: TLSSocket): string[] {
  const chain: string[] = [];
  let cert = socket.getPeerCertificate(true) as DetailedPeerCertificate | undefined;
  while (cert?.raw && chain.length < 10) {
    chain.push(pemOf(cert.raw));
    if (cert.issuerCertificate === cert) break;
    cert = cert.issuerCertificate;
  }
  return chain;
}

function factsOf(socket: TLSSocket): PeerTls {
  const error = socket.authorizationError as unknown;
  return {
    authorized: socket.authorized === true,
    authorizationError: error ? String((error as Error).message ?? error) : undefined,
    chain: peerChain(socket),
  };
}

/**
 * Listens with TLS on the options' "host:port".
 * @throws {Error} when the address cannot be bound or the material is incomplete
 */
export async function listenTls(
  options: ServeH2GrpcOptions,
  serve: (accepted: Accepted) => void,
): Promise<Acceptor> {
  const tls = options.tls!;
  const policy = options.tlsPolicy ?? {};
  const material = currentTlsMaterial(tls);
  const mtls = material.ca !== undefined;
  const requested = mtls && options.clientCertificates === "requested";
  const server = createServer({
    ...secureContextOptions(material, policy),
    requestCert: mtls,
    rejectUnauthorized: mtls && !requested,
    ALPNProtocols: options.onOtherProtocol ? ["h2", "http/1.1"] : ["h2"],
  }, (socket: TLSSocket) => {
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    const facts = requested ? factsOf(socket) : undefined;
    if (options.onOtherProtocol && socket.alpnProtocol !== "h2") {
      options.onOtherProtocol(socket, peer, facts);
      return;
    }
    if (facts && options.acceptClient && !options.acceptClient(facts, peer)) {
      socket.destroy();
      return;
    }
    serve({ socket: fromNodeSocket(socket), peer, peerTls: facts });
  });
  server.on("connection", (raw: Socket) => {
    raw.setNoDelay(true);
  });
  server.on("tlsClientError", (err: Error & { code?: string }, socket?: TLSSocket) => {
    const peer = socket ? `${socket.remoteAddress}:${socket.remotePort}` : "unknown";
    options.onTlsClientError?.(err, peer);
    socket?.destroy();
  });
  const unsubscribe = isTlsSource(tls)
    ? tls.onChange((m) => server.setSecureContext(secureContextOptions(m, policy)))
    : () => {};
  const [hostname, port] = splitHostPort(options.address);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, hostname, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address();
  return {
    port: typeof address === "object" && address ? address.port : 0,
    stop() {
      // Stops accepting; open connections are ended by their HTTP/2 connections.
      unsubscribe();
      server.close();
      return Promise.resolve();
    },
  };
}
