/**
 * `--alpn-proto`: the agent offers the extra ALPN protocols on both its links, so a TLS listener
 * (a load balancer that routes by ALPN, say) that speaks only one of them negotiates it.
 *
 * @module
 */

import assert from "node:assert/strict";
import { generateCa } from "@knp/testing/certs";
import { grpcConnector } from "./grpc_connector.ts";
import { webSocketConnector } from "./ws_connector.ts";
import type { ServerConnector } from "./client_set.ts";

const encoder = new TextEncoder();

/**
 * Starts a TLS listener that speaks only ALPN "konnectivity", lets `connect` make one attempt,
 * and returns the protocol the listener's side negotiated (the attempt itself fails: no h2).
 */
async function negotiatedBy(
  connectorFor: (port: number, ca: Uint8Array) => ServerConnector,
): Promise<string | null> {
  const ca = await generateCa({ commonName: "alpn-ca" });
  const leaf = await ca.issue({
    commonName: "localhost",
    dnsNames: ["localhost"],
    usage: "server",
  });
  using listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: leaf.certPem,
    key: leaf.keyPem,
    alpnProtocols: ["konnectivity"],
  });
  // The attempt may fail before the handshake below has returned: its rejection is awaited now.
  const failed = assert.rejects(connectorFor(listener.addr.port, encoder.encode(ca.certPem))());
  const conn = await listener.accept();
  try {
    return (await conn.handshake()).alpnProtocol;
  } finally {
    conn.close();
    await failed;
  }
}

const common = { host: "localhost", agentId: "a1", agentIdentifiers: "" };

Deno.test("--alpn-proto: the gRPC connector offers the extra protocols (then h2)", async () => {
  const alpn = await negotiatedBy((port, ca) =>
    grpcConnector({
      ...common,
      port,
      tls: { ca },
      grpcTransport: "native",
      alpnProtocols: ["konnectivity"],
    })
  );
  assert.equal(alpn, "konnectivity");
});

Deno.test("--alpn-proto: the WebSocket connector offers the extra protocols (then http/1.1)", async () => {
  const alpn = await negotiatedBy((port, ca) =>
    webSocketConnector({ ...common, port, tls: { ca }, alpnProtocols: ["konnectivity"] })
  );
  assert.equal(alpn, "konnectivity");
});
