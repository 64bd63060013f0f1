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
import { exchangeHello, type HandshakeSocket, webSocketConnector } from "./ws_connector.ts";
import { retryAfterOf } from "./client_set.ts";

const encoder = new TextEncoder();

/**
 * A server that speaks the link's handshake, then sends `ready` and a packet right behind it: in
 * ONE write, or in two back to back (two TLS records, both there when the agent reads).
 */
async function eagerServer(
  writes: "one" | "two",
): Promise<{ listener: TlsListener; caPem: string }> {
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
    onConnection: (socket) => void serve(socket, writes),
  });
  return { listener, caPem: ca.certPem };
}

async function serve(socket: TLSSocket, writes: "one" | "two"): Promise<void> {
  const req = await readUpgradeRequest(socket, 5_000);
  socket.write(await acceptResponse(req.headers.get("sec-websocket-key") ?? ""));
  const ws = new ServerWebSocket(socket, req.leftover);
  const proved = Promise.withResolvers<void>();
  ws.onmessage = () => proved.resolve();
  ws.send(JSON.stringify({ serverId: "s1", serverCount: 1, window: 65536, challenge: "c" }));
  await proved.promise;
  const ready = encodeServerFrame(OP_TEXT, encoder.encode(JSON.stringify({ ready: true })));
  const packet = encodeServerFrame(OP_BINARY, frame([closeRequest(1n)]));
  if (writes === "one") socket.write(Buffer.concat([ready, packet]));
  else for (const bytes of [ready, packet]) socket.write(bytes);
  // A later packet in a later write: it must come second.
  ws.onmessage = () => ws.send(frame([closeRequest(2n)]));
}

/** The agent's WebSocket connector to a test server on `port` whose CA is `caPem`. */
function connectorTo(port: number, caPem: string) {
  const tls = { ca: encoder.encode(caPem) };
  return webSocketConnector({
    host: "localhost",
    port,
    agentId: "agent-1",
    agentIdentifiers: "",
    tls,
  });
}

for (const writes of ["one", "two"] as const) {
  Deno.test(`ws connector: a packet right behind \`ready\` (${writes} write(s)) reaches the packet stream first`, async () => {
    const { listener, caPem } = await eagerServer(writes);
    try {
      const connect = connectorTo(listener.port, caPem);
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
}

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
    const connect = connectorTo(listener.port, ca.certPem);
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

/**
 * A scripted stand-in for the link's socket (knp's own `HandshakeSocket` interface; the tests
 * above use real TLS sockets): it delivers the server's messages at chosen microtask hops, since
 * a socket read can complete between `ready` and the moment the packet stream sets its handlers
 * (seen under load: a DIAL_REQ dropped there went unanswered until the client's dial timeout).
 */
class ScriptedSocket implements HandshakeSocket {
  onmessage: HandshakeSocket["onmessage"] = null;
  onclose: HandshakeSocket["onclose"] = null;
  onerror: HandshakeSocket["onerror"] = null;
  /** What the agent sent; the second message (its proof) makes the server answer `ready`. */
  constructor(readonly onProof: () => void) {}
  send(): void {
    this.onProof();
  }
  message(data: string | ArrayBuffer): void {
    this.onmessage?.({ type: "message", data });
  }
}

/** Runs `fn` after `hops` microtasks. */
function afterHops(hops: number, fn: () => void): void {
  if (hops === 0) fn();
  else queueMicrotask(() => afterHops(hops - 1, fn));
}

for (const what of ["packet", "close"] as const) {
  Deno.test(`ws connector: a ${what} at any point after \`ready\` reaches the packet stream`, async () => {
    for (let hops = 0; hops <= 12; hops++) {
      const delivered = Promise.withResolvers<void>();
      const ws: ScriptedSocket = new ScriptedSocket(() => {
        ws.message(JSON.stringify({ ready: true }));
        afterHops(hops, () => {
          if (what === "packet") ws.message(new Uint8Array([hops]).buffer);
          else ws.onclose?.({ type: "close", code: 1001, reason: "going away", wasClean: true });
          delivered.resolve();
        });
      });
      const handshake = exchangeHello(ws, new AbortController().signal, "agent-1", undefined);
      ws.message(JSON.stringify({ serverId: "s1", serverCount: 1, window: 65536, challenge: "c" }));
      const hello = await handshake.catch((err: KnpError) => err);
      const seen: string[] = [];
      if (hello instanceof Error) {
        // Failing the handshake is right for a close that came first; a packet never fails it.
        assert.equal(what, "close", `hop ${hops}: ${hello.message}`);
        assert.match(hello.message, /closed the WebSocket link \(1001: going away\)/);
        continue;
      }
      // The packet stream takes the socket over, as webSocketConnector's does.
      ws.onmessage = (e) => void seen.push(`packet ${new Uint8Array(e.data as ArrayBuffer)[0]}`);
      ws.onclose = (e) => void seen.push(`close ${e.code}`);
      hello.handOff();
      await delivered.promise;
      assert.deepEqual(seen, [what === "packet" ? `packet ${hops}` : "close 1001"], `hop ${hops}`);
    }
  });
}
