import assert from "node:assert/strict";
import { dataPacket, type DecodedPacket } from "@knp/proto";
import { giveBackMessageBuffer, takeMessageBuffer } from "./message_pool.ts";
import { connectWebSocket } from "./ws_client.ts";
import { unframe } from "./ws_message.ts";
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
