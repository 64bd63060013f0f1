/**
 * Fair sending on the WebSocket link over a real socket pair (knp's client WebSocket → knp's
 * server WebSocket on node:net): a small packet of one connection queued behind a large backlog
 * of another is received within a bounded number of bytes of that backlog (what may already be
 * ahead of the peer), not behind all of it; every packet still arrives, in order per connection.
 * An ordering property, not a timing one.
 */

import assert from "node:assert/strict";
import { createServer, type Socket } from "node:net";
import { dataPacket, type DecodedPacket } from "@knp/proto";
import { ServerWebSocket } from "./server_websocket.ts";
import { acceptResponse, readUpgradeRequest } from "./ws_accept.ts";
import { connectWebSocket } from "./ws_client.ts";
import { IN_FLIGHT_BYTES, WebSocketPacketStream } from "./ws_stream.ts";

const KiB = 1024;

/** A client WebSocket link stream and the server end's, over loopback TCP. */
async function linkPair(): Promise<{
  sender: WebSocketPacketStream;
  receiver: WebSocketPacketStream;
  close(): Promise<void>;
}> {
  const accepted = Promise.withResolvers<ServerWebSocket>();
  const server = createServer(async (socket: Socket) => {
    const req = await readUpgradeRequest(socket, 5_000);
    socket.write(await acceptResponse(req.headers.get("sec-websocket-key") ?? ""));
    accepted.resolve(new ServerWebSocket(socket, req.leftover));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  const client = await connectWebSocket(`ws://127.0.0.1:${port}/link`);
  const ws = await accepted.promise;
  const sender = new WebSocketPacketStream(client as unknown as WebSocket, "client");
  const receiver = new WebSocketPacketStream(ws as unknown as WebSocket, "server");
  return {
    sender,
    receiver,
    async close() {
      sender.close();
      await Promise.all([sender.done, receiver.done]);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The bytes of connection `id` in a packet (0 for other packets). */
function bytesOf(packet: DecodedPacket, id: bigint): number {
  return packet.type === "DATA" && packet.data.connectId === id ? packet.data.data.length : 0;
}

Deno.test("ws link: a small packet behind another connection's 16 MiB backlog passes it", async () => {
  const { sender, receiver, close } = await linkPair();
  try {
    const bulk = 64;
    const piece = 256 * KiB;
    let bulkBefore = -1;
    let bulkBytes = 0;
    let next = 0;
    const all = Promise.withResolvers<void>();
    receiver.start({
      onPacket(packet) {
        const n = bytesOf(packet, 1n);
        if (n > 0) {
          // Per-connection order: the bulk pieces arrive in the order they were sent.
          assert.equal(packet.type === "DATA" && packet.data.data[0], next++ % 256);
          bulkBytes += n;
        }
        if (bytesOf(packet, 2n) > 0) bulkBefore = bulkBytes;
        if (next === bulk && bulkBefore >= 0) all.resolve();
      },
      onEnd() {},
    });
    sender.start({ onPacket() {}, onEnd() {} });
    let sentCallbacks = 0;
    for (let i = 0; i < bulk; i++) {
      const data = new Uint8Array(piece).fill(i % 256);
      sender.send(dataPacket(1n, data), () => sentCallbacks++);
    }
    // 16 MiB of connection 1 queued in this turn; now 32 bytes of connection 2.
    sender.send(dataPacket(2n, new Uint8Array(32).fill(0xee)), () => sentCallbacks++);
    await all.promise;
    // At most what was in flight ahead of the peer (plus one message) went before it.
    assert.ok(
      bulkBefore <= IN_FLIGHT_BYTES + piece,
      `the small packet waited behind ${bulkBefore} bytes of the backlog`,
    );
    assert.ok(bulkBefore < bulk * piece / 4, `FIFO-like: ${bulkBefore} bytes before it`);
    assert.equal(bulkBytes, bulk * piece);
    assert.equal(sentCallbacks, bulk + 1);
    assert.equal(sender.bufferedBytes, 0);
  } finally {
    await close();
  }
});

Deno.test("ws link: packets sent while the peer is slow all arrive, in order, then a clean close", async () => {
  const { sender, receiver, close } = await linkPair();
  try {
    const flows = 8;
    const perFlow = 40;
    const seen = new Map<bigint, number>();
    const done = Promise.withResolvers<void>();
    let total = 0;
    receiver.start({
      onPacket(packet) {
        if (packet.type !== "DATA") return;
        const id = packet.data.connectId;
        const i = seen.get(id) ?? 0;
        assert.equal(packet.data.data[0], i, `flow ${id} out of order`);
        seen.set(id, i + 1);
        if (++total === flows * perFlow) done.resolve();
      },
      onEnd() {},
    });
    sender.start({ onPacket() {}, onEnd() {} });
    for (let i = 0; i < perFlow; i++) {
      for (let f = 1; f <= flows; f++) {
        sender.send(dataPacket(BigInt(f), new Uint8Array(f * 10 * KiB).fill(i)));
      }
    }
    await done.promise;
    for (let f = 1; f <= flows; f++) assert.equal(seen.get(BigInt(f)), perFlow);
  } finally {
    await close();
  }
});
