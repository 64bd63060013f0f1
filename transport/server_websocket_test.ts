import assert from "node:assert/strict";
import { createServer, type Server, type Socket } from "node:net";
import { ServerWebSocket } from "./server_websocket.ts";
import {
  acceptResponse,
  parseRequestHead,
  readUpgradeRequest,
  upgradeProblem,
} from "./ws_accept.ts";
import { type ClientWebSocket, connectWebSocket } from "./ws_client.ts";
import {
  encodeClientFrame,
  encodeServerFrame,
  FrameParser,
  OP_BINARY,
  OP_TEXT,
} from "./ws_frame.ts";

/** A plain-TCP server that upgrades every connection and hands out the ServerWebSockets. */
async function upgradingServer(): Promise<{
  server: Server;
  port: number;
  next: () => Promise<ServerWebSocket>;
}> {
  const waiting: ((ws: ServerWebSocket) => void)[] = [];
  const ready: ServerWebSocket[] = [];
  const server = createServer(async (socket: Socket) => {
    const req = await readUpgradeRequest(socket, 5_000);
    socket.write(await acceptResponse(req.headers.get("sec-websocket-key") ?? ""));
    const ws = new ServerWebSocket(socket, req.leftover);
    const w = waiting.shift();
    if (w) w(ws);
    else ready.push(ws);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    server,
    port,
    next: () => {
      const ws = ready.shift();
      return ws ? Promise.resolve(ws) : new Promise((resolve) => waiting.push(resolve));
    },
  };
}

function nextMessage(ws: ServerWebSocket | ClientWebSocket): Promise<string | ArrayBuffer> {
  return new Promise((resolve) => {
    ws.onmessage = (e) => resolve(e.data as string | ArrayBuffer);
  });
}

Deno.test("server websocket: messages both ways, a 3 MiB one byte-exact, pings answered", async () => {
  const { server, port, next } = await upgradingServer();
  const client = await connectWebSocket(`ws://127.0.0.1:${port}/x`);
  try {
    const ws = await next();
    const got = nextMessage(ws);
    client.send("hello");
    assert.equal(await got, "hello");
    const big = new Uint8Array(3 * 1024 * 1024).map((_, i) => i * 7);
    const back = nextMessage(client);
    const there = nextMessage(ws);
    client.send(big);
    const received = new Uint8Array(await there as ArrayBuffer);
    assert.deepEqual(received, big);
    ws.send(received);
    assert.deepEqual(new Uint8Array(await back as ArrayBuffer), big);
    const pong = Promise.withResolvers<Uint8Array>();
    ws.onpong = (e) => pong.resolve(e.data);
    ws.ping(new Uint8Array([1, 2, 3]));
    assert.deepEqual(await pong.promise, new Uint8Array([1, 2, 3]));
    const closed = Promise.withResolvers<[number, string]>();
    client.onclose = (e) => closed.resolve([e.code, e.reason]);
    const serverClosed = Promise.withResolvers<boolean>();
    ws.onclose = (e) => serverClosed.resolve(e.wasClean);
    ws.close(4001, "bye");
    assert.deepEqual(await closed.promise, [4001, "bye"]);
    assert.equal(await serverClosed.promise, true);
  } finally {
    client.close();
    await new Promise((resolve) => server.close(resolve));
  }
});

Deno.test("server websocket: a client's close frame ends the server side with its code", async () => {
  const { server, port, next } = await upgradingServer();
  const client = await connectWebSocket(`ws://127.0.0.1:${port}/x`);
  const ws = await next();
  const closed = Promise.withResolvers<number>();
  ws.onclose = (e) => closed.resolve(e.code);
  const clientClosed = Promise.withResolvers<void>();
  client.onclose = () => clientClosed.resolve();
  client.close(1000);
  // The client's close frame arrives: a clean close with its code.
  assert.equal(await closed.promise, 1000);
  await clientClosed.promise;
  await new Promise((resolve) => server.close(resolve));
});

Deno.test("frame parser (server role): masked frames parse split anywhere; unmasked fail 1002", () => {
  const text = encodeClientFrame(OP_TEXT, new TextEncoder().encode("héllo"));
  const binary = encodeClientFrame(OP_BINARY, new Uint8Array(300).fill(9));
  const wire = new Uint8Array([...text, ...binary]);
  for (let cut = 0; cut <= wire.length; cut += 7) {
    const seen: unknown[] = [];
    const parser = new FrameParser(
      {
        text: (t) => seen.push(t),
        binary: (b) => seen.push(b.length),
        ping() {},
        pong() {},
        close() {},
        fail: (code) => seen.push(`fail ${code}`),
      },
      1 << 20,
      true,
    );
    parser.push(wire.subarray(0, cut));
    parser.push(wire.subarray(cut));
    assert.deepEqual(seen, ["héllo", 300]);
  }
  const failures: number[] = [];
  const parser = new FrameParser(
    {
      text() {},
      binary() {},
      ping() {},
      pong() {},
      close() {},
      fail: (code) => failures.push(code),
    },
    1 << 20,
    true,
  );
  parser.push(encodeServerFrame(OP_TEXT, new Uint8Array([65])));
  assert.deepEqual(failures, [1002]);
});

Deno.test("ws accept: request heads and what is not an upgrade", () => {
  const head = parseRequestHead(
    "GET /knp/v1/agent?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n" +
      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
  );
  assert.equal(head.path, "/knp/v1/agent");
  const req = { ...head, leftover: new Uint8Array(0) };
  assert.equal(upgradeProblem(req), undefined);
  const plain = { ...req, headers: new Map([["host", "a"]]) };
  assert.equal(upgradeProblem(plain)?.[0], 426);
  assert.throws(() => parseRequestHead("garbage"), /request line/);
});
