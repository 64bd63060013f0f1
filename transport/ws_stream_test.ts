/**
 * The WebSocket link stream over real sockets: `done`, and keepalive on a fake clock against a
 * silent peer (a raw TCP server that completes the upgrade and then never answers) and a live one
 * (`Deno.serve`, whose WebSocket answers pings).
 */

import assert from "node:assert/strict";
import { KnpError } from "@knp/core/errors";
import { dialRequest } from "@knp/proto";
import { fakeTimers } from "@knp/testing/fakes";
import { connectWebSocket } from "./ws_client.ts";
import { acceptFor } from "./ws_handshake.ts";
import { WebSocketPacketStream } from "./ws_stream.ts";

const latin1 = new TextDecoder("latin1");
const KEEPALIVE = { intervalMs: 10_000, timeoutMs: 3_000 };

/** Completes the upgrade of one connection, then only reads; `heard` resolves at its first frame. */
function silentServer() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let heard!: () => void;
  const firstFrame = new Promise<void>((resolve) => (heard = resolve));
  let conn: Deno.Conn | undefined;
  const served = (async () => {
    conn = await listener.accept();
    const buf = new Uint8Array(16 * 1024);
    let head = "";
    while (!head.includes("\r\n\r\n")) {
      const n = await conn.read(buf);
      if (n === null) return conn!.close();
      head += latin1.decode(buf.subarray(0, n));
    }
    const key = /sec-websocket-key: *(\S+)/i.exec(head)![1]!;
    const answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" +
      `Connection: Upgrade\r\nSec-WebSocket-Accept: ${await acceptFor(key)}\r\n\r\n`;
    await conn.write(new TextEncoder().encode(answer));
    try {
      while ((await conn.read(buf)) !== null) heard();
      conn.close();
    } catch { /* closed by the test */ }
  })();
  const { port } = listener.addr as Deno.NetAddr;
  return {
    url: `ws://127.0.0.1:${port}/`,
    firstFrame,
    /** Cuts the connection (no close frame: the peer is gone) and stops listening. */
    async close() {
      listener.close();
      try {
        conn?.close();
      } catch { /* already closed */ }
      await served;
    },
  };
}

/** A `Deno.serve` WebSocket server that keeps every link open and answers pings (Deno does). */
function liveServer() {
  const http = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req, { idleTimeout: 0 });
    socket.onmessage = () => {};
    return response;
  });
  return { url: `ws://127.0.0.1:${http.addr.port}/`, close: () => http.shutdown() };
}

Deno.test("ws stream keepalive ends the stream with TIMEOUT when the peer goes silent", async () => {
  const server = silentServer();
  const { clock, timers } = fakeTimers();
  const ws = await connectWebSocket(server.url);
  const stream = new WebSocketPacketStream(ws as unknown as WebSocket, "ws:silent-peer", {
    keepalive: KEEPALIVE,
    timers,
  });
  const closed = new Promise<void>((resolve) => {
    const onclose = ws.onclose;
    ws.onclose = (event) => {
      onclose?.call(ws, event);
      resolve();
    };
  });
  const ends: (Error | undefined)[] = [];
  stream.start({ onPacket() {}, onEnd: (e) => ends.push(e) });

  clock.tick(KEEPALIVE.intervalMs);
  await server.firstFrame; // the ping reached the peer, which does not answer
  clock.tick(KEEPALIVE.timeoutMs - 1);
  assert.equal(stream.closed, false, "the peer still has 1 ms");
  clock.tick(1);
  const error = await stream.done;
  assert.ok(error instanceof KnpError);
  assert.equal(error.code, "TIMEOUT");
  assert.match(error.message, /ws:silent-peer/);
  assert.match(error.message, /keepalive time 10000 ms/);
  assert.deepEqual(ends, [error]);
  assert.equal(stream.closed, true);
  await server.close(); // ends the TCP stream, so the client socket finishes its close
  await closed;
});

Deno.test("ws stream keepalive keeps a link whose peer answers pings, and done reports a clean end", async () => {
  const server = liveServer();
  const { clock, timers } = fakeTimers();
  const ws = await connectWebSocket(server.url);
  const stream = new WebSocketPacketStream(ws as unknown as WebSocket, "ws:live-peer", {
    keepalive: KEEPALIVE,
    timers,
  });
  let pong: () => void = () => {};
  const onpong = ws.onpong;
  ws.onpong = (event) => {
    onpong?.call(ws, event);
    pong();
  };
  stream.start({ onPacket() {}, onEnd() {} });
  for (let i = 0; i < 5; i++) {
    const answered = new Promise<void>((resolve) => (pong = resolve));
    // To the next ping: the first at 10 s, then every 10 s.
    clock.tick(i === 0 ? KEEPALIVE.intervalMs : KEEPALIVE.intervalMs - KEEPALIVE.timeoutMs);
    await answered;
    clock.tick(KEEPALIVE.timeoutMs);
    assert.equal(stream.closed, false, `ping ${i + 1} was answered`);
  }
  assert.equal(stream.send(dialRequest("10.0.0.1:80", 1n)), true);
  stream.close();
  assert.equal(await stream.done, undefined);
  await server.close();
});
