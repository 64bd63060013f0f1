import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type { TLSSocket } from "node:tls";
import { closeRequest, type DecodedPacket } from "@knp/proto";
import { generateCa } from "@knp/testing/certs";
import { ServerWebSocket } from "@knp/transport/server_websocket";
import { TlsListener } from "@knp/transport/tls_listener";
import { acceptResponse, readUpgradeRequest } from "@knp/transport/ws_accept";
import { encodeServerFrame, OP_BINARY, OP_TEXT } from "@knp/transport/ws_frame";
import { frame } from "@knp/transport/ws_stream";
import { webSocketConnector } from "./ws_connector.ts";

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
