import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type { TLSSocket } from "node:tls";
import { closeRequest, type DecodedPacket } from "@knp/proto";
import { generateCa } from "@knp/testing/certs";
import { ServerWebSocket } from "@knp/transport/server_websocket";
import { TlsListener } from "@knp/transport/tls_listener";
import { acceptResponse, readUpgradeRequest, refusalResponse } from "@knp/transport/ws_accept";
import { encodeServerFrame, OP_BINARY, OP_TEXT } from "@knp/transport/ws_frame";
import { frame } from "@knp/transport/ws_stream";
import type { KnpError } from "@knp/core/errors";
import { webSocketConnector } from "./ws_connector.ts";
import { retryAfterOf } from "./client_set.ts";

const encoder = new TextEncoder();

/** A server that speaks the link's handshake, then sends `ready` and a packet in ONE write. */
async function eagerServer(): Promise<{ listener: TlsListener; caPem: string }> {
  const ca = await generateCa({ commonName: "race-ca" });
  const leaf = await ca.issue({
    commonName: "localhost",
    dnsNames: ["localhost"],
    usage: "server",
  });
  const listener = await TlsListener.listen({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: encoder.encode(leaf.certPem), key: encoder.encode(leaf.keyPem) },
    onConnection: (socket) => void serve(socket),
  });
  return { listener, caPem: ca.certPem };
}

async function serve(socket: TLSSocket): Promise<void> {
  const req = await readUpgradeRequest(socket, 5_000);
  socket.write(await acceptResponse(req.headers.get("sec-websocket-key") ?? ""));
  const ws = new ServerWebSocket(socket, req.leftover);
  const proved = Promise.withResolvers<void>();
  ws.onmessage = () => proved.resolve();
  ws.send(JSON.stringify({ serverId: "s1", serverCount: 1, window: 65536, challenge: "c" }));
  await proved.promise;
  const ready = encodeServerFrame(OP_TEXT, encoder.encode(JSON.stringify({ ready: true })));
  const packet = encodeServerFrame(OP_BINARY, frame([closeRequest(1n)]));
  socket.write(Buffer.concat([ready, packet]));
  // A later packet in a later write: it must come second.
  ws.onmessage = () => ws.send(frame([closeRequest(2n)]));
}

Deno.test("ws connector: a packet in the same read as `ready` reaches the packet stream first", async () => {
  const { listener, caPem } = await eagerServer();
  try {
    const connect = webSocketConnector({
      host: "localhost",
      port: listener.port,
      agentId: "agent-1",
      agentIdentifiers: "",
      tls: { ca: encoder.encode(caPem) },
    });
    const link = await connect();
    const received: DecodedPacket[] = [];
    const second = Promise.withResolvers<void>();
    link.stream.start({
      onPacket(packet) {
        received.push(packet);
        if (packet.type === "CLOSE_REQ" && packet.closeRequest.connectId === 2n) second.resolve();
      },
      onEnd() {
        second.reject(new Error("the link ended"));
      },
    });
    // Ask the server for the second packet (any message will do).
    link.stream.send(closeRequest(9n));
    await second.promise;
    assert.deepEqual(
      received.map((p) => p.type === "CLOSE_REQ" ? p.closeRequest.connectId : undefined),
      [1n, 2n],
    );
    const ended = link.stream.done;
    link.close();
    await ended;
  } finally {
    await listener.close();
  }
});

Deno.test("ws connector: a 503 refusal carries the server's Retry-After as retryAfterMs", async () => {
  const ca = await generateCa({ commonName: "busy-ca" });
  const leaf = await ca.issue({
    commonName: "localhost",
    dnsNames: ["localhost"],
    usage: "server",
  });
  const listener = await TlsListener.listen({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: encoder.encode(leaf.certPem), key: encoder.encode(leaf.keyPem) },
    onConnection: async (socket) => {
      await readUpgradeRequest(socket, 5_000);
      socket.end(refusalResponse(503, "server overloaded: too many agents connecting", 3));
    },
  });
  try {
    const connect = webSocketConnector({
      host: "localhost",
      port: listener.port,
      agentId: "agent-1",
      agentIdentifiers: "",
      tls: { ca: encoder.encode(ca.certPem) },
    });
    const err = await connect().then(
      () => assert.fail("the link should be refused"),
      (e: unknown) => e as KnpError & { retryAfterMs?: number },
    );
    assert.equal(err.code, "OVERLOADED");
    assert.match(err.message, /503 Service Unavailable: server overloaded/);
    assert.equal(err.retryAfterMs, 3_000);
    assert.equal(retryAfterOf(err), 3_000);
  } finally {
    await listener.close();
  }
});
