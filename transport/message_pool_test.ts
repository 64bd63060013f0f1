import assert from "node:assert/strict";
import { createServer, type Socket } from "node:net";
import { dataPacket, type DecodedPacket } from "@knp/proto";
import {
  giveBackMessageBuffer,
  isLentMessageBuffer,
  shareMessageBuffer,
  takeMessageBuffer,
} from "./message_pool.ts";
import { ServerWebSocket } from "./server_websocket.ts";
import { acceptResponse, readUpgradeRequest } from "./ws_accept.ts";
import { connectWebSocket } from "./ws_client.ts";
import { frame, unframe } from "./ws_message.ts";
import { WebSocketPacketStream } from "./ws_stream.ts";

Deno.test("message pool: a buffer given back is lent again, once; others are ignored", () => {
  const a = takeMessageBuffer(100_000);
  assert.equal(a.length, 100_000);
  const b = takeMessageBuffer(100_000);
  assert.notEqual(a.buffer, b.buffer);
  giveBackMessageBuffer(a.subarray(10, 20)); // any view of it
  giveBackMessageBuffer(a); // twice: ignored, so it cannot go to two holders
  const c = takeMessageBuffer(99_000); // the same size class
  assert.equal(c.buffer, a.buffer);
  assert.notEqual(takeMessageBuffer(99_000).buffer, a.buffer);
  // Not taken here: never lent out.
  const foreign = new Uint8Array(new ArrayBuffer(c.buffer.byteLength));
  giveBackMessageBuffer(foreign);
  assert.notEqual(takeMessageBuffer(100_000).buffer, foreign.buffer);
  // Small and huge messages are plain allocations, exactly sized.
  for (const size of [1_000, 1 << 20]) {
    const m = takeMessageBuffer(size);
    assert.equal(m.buffer.byteLength, size);
    giveBackMessageBuffer(m);
    assert.notEqual(takeMessageBuffer(size).buffer, m.buffer);
  }
});

Deno.test("message pool: a shared buffer goes back with its last holder's share", () => {
  const m = takeMessageBuffer(300_000);
  shareMessageBuffer(m, 3);
  for (let i = 0; i < 2; i++) {
    giveBackMessageBuffer(m.subarray(i * 1000, i * 1000 + 10));
    assert.ok(isLentMessageBuffer(m), `still lent after ${i + 1} of 3`);
  }
  giveBackMessageBuffer(m.subarray(5000));
  assert.ok(!isLentMessageBuffer(m));
  assert.equal(takeMessageBuffer(300_000).buffer, m.buffer);
  // A message with no packet holding a view goes back at once.
  const n = takeMessageBuffer(300_000);
  shareMessageBuffer(n, 0);
  assert.ok(!isLentMessageBuffer(n));
});

/** A `Deno.serve` WebSocket server that hands every binary message it receives to `onMessage`. */
function receivingServer(onMessage: (data: ArrayBuffer) => void) {
  const http = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req, { idleTimeout: 0 });
    socket.binaryType = "arraybuffer";
    socket.onmessage = (e) => onMessage(e.data as ArrayBuffer);
    return response;
  });
  return { url: `ws://127.0.0.1:${http.addr.port}/`, close: () => http.shutdown() };
}

Deno.test("ws stream: a pooled DATA payload goes back to the pool only once it is framed", async () => {
  const got = Promise.withResolvers<DecodedPacket[]>();
  const server = receivingServer((data) => got.resolve([...unframe(new Uint8Array(data))]));
  const ws = await connectWebSocket(server.url);
  const stream = new WebSocketPacketStream(ws as unknown as WebSocket, server.url);
  try {
    const payload = takeMessageBuffer(200_000);
    for (let i = 0; i < payload.length; i++) payload[i] = i % 251;
    stream.send(dataPacket(7n, payload));
    // Queued, not framed yet: the buffer is still lent.
    const meanwhile = takeMessageBuffer(200_000);
    assert.notEqual(meanwhile.buffer, payload.buffer);
    const [packet] = await got.promise;
    assert.ok(packet?.type === "DATA");
    assert.equal(packet.data.connectId, 7n);
    assert.equal(packet.data.data.length, 200_000);
    assert.ok(packet.data.data.every((b, i) => b === i % 251), "the payload arrived intact");
    // Framed and sent: the next message of that size reuses it.
    assert.equal(takeMessageBuffer(200_000).buffer, payload.buffer);
  } finally {
    const ended = stream.done;
    stream.close();
    await ended;
    await server.close();
  }
});

Deno.test("agent link (server end, pooled): the packets of one message share its buffer", async () => {
  const packets = Promise.withResolvers<DecodedPacket[]>();
  const sockets: Socket[] = [];
  const server = createServer((socket) => {
    sockets.push(socket);
    void (async () => {
      const req = await readUpgradeRequest(socket, 5_000);
      socket.write(await acceptResponse(req.headers.get("sec-websocket-key") ?? ""));
      const ws = new ServerWebSocket(socket, req.leftover, undefined, true);
      const stream = new WebSocketPacketStream(ws as unknown as WebSocket, "test");
      const got: DecodedPacket[] = [];
      stream.start({
        onPacket: (p) => void (got.push(p) === 2 && packets.resolve(got)),
        onEnd: () => {},
      });
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  const client = await connectWebSocket(`ws://127.0.0.1:${port}/`);
  try {
    const a = new Uint8Array(40_000).fill(0xa1);
    const b = new Uint8Array(50_000).fill(0xb2);
    client.send(frame([dataPacket(1n, a), dataPacket(2n, b)])); // one message, 90 KB
    const [p1, p2] = await packets.promise;
    assert.ok(p1?.type === "DATA" && p2?.type === "DATA");
    assert.deepEqual([p1.data.data, p2.data.data], [a, b]);
    assert.equal(p1.data.data.buffer, p2.data.data.buffer, "views of one pooled message");
    giveBackMessageBuffer(p1.data.data);
    assert.ok(isLentMessageBuffer(p2.data.data), "the second packet still holds it");
    giveBackMessageBuffer(p2.data.data);
    assert.ok(!isLentMessageBuffer(p2.data.data));
  } finally {
    client.close();
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
});
