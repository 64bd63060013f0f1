/**
 * Pongs go out ahead of queued data frames, on both ends of knp's WebSocket (the pong of an
 * acknowledgement ping must not wait behind megabytes of bulk data): over a real TCP socket pair,
 * one end queues 32 MiB while its peer does not read, the peer sends a ping and then a text
 * message; once that message arrived (so the ping was handled), the peer reads everything and
 * checks that the pong came before the data that was still queued. Also: a message built in place
 * by `sendBinaryWith` arrives byte-exact, and large frames (built in pooled buffers) arrive intact.
 */

import assert from "node:assert/strict";
import { createServer, type Socket } from "node:net";
import { ClientWebSocket } from "./client_websocket.ts";
import { ServerWebSocket } from "./server_websocket.ts";
import { encodeClientFrame, encodeServerFrame, FrameParser, OP_PING, OP_TEXT } from "./ws_frame.ts";

const MESSAGE_BYTES = 256 * 1024;
const MESSAGES = 128;
const encoder = new TextEncoder();

/** What a reader saw: data bytes before and after the first pong, and the pong's payload. */
interface Seen {
  before: number;
  after: number;
  pong: string | undefined;
}

/** Reads frames (masked: a client's) until `MESSAGES` binary messages and a pong arrived. */
async function readAll(
  read: (buf: Uint8Array) => Promise<number | null>,
  masked: boolean,
): Promise<Seen> {
  const seen: Seen = { before: 0, after: 0, pong: undefined };
  let messages = 0;
  const parser = new FrameParser(
    {
      text: () => {},
      binary: (data) => {
        // Message i is all (i & 0xff): a pooled frame buffer reused too early would show here.
        const want = messages & 0xff;
        if (data.some((b) => b !== want)) throw new Error(`message ${messages} is corrupt`);
        messages++;
        if (seen.pong === undefined) seen.before += data.length;
        else seen.after += data.length;
      },
      ping: () => {},
      pong: (payload) => (seen.pong = new TextDecoder().decode(payload)),
      close: () => {},
      fail: (_code, reason) => {
        throw new Error(reason);
      },
    },
    1 << 20,
    masked,
  );
  const buf = new Uint8Array(256 * 1024);
  while (messages < MESSAGES || seen.pong === undefined) {
    const n = await read(buf);
    if (n === null) throw new Error("the stream ended early");
    parser.push(buf.subarray(0, n));
  }
  return seen;
}

/** The pong must precede all but the frames already on their way when the ping was handled. */
function assertPongFirst(seen: Seen, queuedAtPing: number): void {
  assert.equal(seen.pong, "ack");
  assert.equal(seen.before + seen.after, MESSAGES * MESSAGE_BYTES);
  // Precondition: most of the data was still queued in userland when the ping was handled.
  assert.ok(queuedAtPing > 8 * MESSAGE_BYTES, `only ${queuedAtPing} bytes were queued`);
  // At most the write in progress (one frame, or a coalesced 64 KiB) goes before the pong.
  assert.ok(
    seen.after >= queuedAtPing - 2 * MESSAGE_BYTES,
    `pong after ${seen.before} data bytes; ${queuedAtPing} were queued when the ping arrived`,
  );
}

/** What both socket classes offer that the ordering tests use. */
interface QueuingSocket {
  send(data: Uint8Array): void;
  onmessage: ((event: MessageEvent) => void) | null;
  readonly bufferedAmount: number;
}

/**
 * Queues `MESSAGES` binary messages on `ws` (message i all `i & 0xff`); resolves with the bytes
 * still queued when the peer's text message arrives.
 */
function queueMessages(ws: QueuingSocket): Promise<number> {
  const payload = new Uint8Array(MESSAGE_BYTES);
  for (let i = 0; i < MESSAGES; i++) ws.send(payload.fill(i & 0xff));
  return new Promise<number>((resolve) => {
    ws.onmessage = () => resolve(ws.bufferedAmount);
  });
}

/** A ping ("ack") and then a text message ("go"), framed by `encode`, written with `write`. */
async function writePingThenText(
  encode: (opcode: number, payload: Uint8Array) => Uint8Array,
  write: (bytes: Uint8Array) => Promise<number>,
): Promise<void> {
  const ping = encode(OP_PING, encoder.encode("ack"));
  const text = encode(OP_TEXT, encoder.encode("go"));
  const both = new Uint8Array(ping.length + text.length);
  both.set(ping);
  both.set(text, ping.length);
  for (let off = 0; off < both.length;) off += await write(both.subarray(off));
}

Deno.test("client websocket: a pong is written before data frames queued earlier", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const server = await accepted;
  const ws = new ClientWebSocket(conn, "ws://test/", new Uint8Array(0), 1 << 20);
  try {
    const go = queueMessages(ws);
    await writePingThenText(encodeServerFrame, (b) => server.write(b));
    const queuedAtPing = await go;
    assertPongFirst(await readAll((b) => server.read(b), true), queuedAtPing);
  } finally {
    const closed = new Promise<void>((resolve) => (ws.onclose = () => resolve()));
    server.close();
    ws.close();
    await closed;
    listener.close();
  }
});

Deno.test("server websocket: a pong is written before data frames queued earlier", async () => {
  const accepted = Promise.withResolvers<Socket>();
  const server = createServer((socket: Socket) => accepted.resolve(socket));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const ws = new ServerWebSocket(await accepted.promise, new Uint8Array(0), 1 << 20);
  try {
    const go = queueMessages(ws);
    await writePingThenText(encodeClientFrame, (b) => conn.write(b));
    const queuedAtPing = await go;
    assertPongFirst(await readAll((b) => conn.read(b), false), queuedAtPing);
  } finally {
    const closed = new Promise<void>((resolve) => (ws.onclose = () => resolve()));
    conn.close();
    await closed;
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

Deno.test("websocket: sendBinaryWith builds the message in place, both directions", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const server = await accepted;
  const ws = new ClientWebSocket(conn, "ws://test/", new Uint8Array(0), 1 << 20);
  try {
    // Sizes on each side of the 7-bit / 16-bit / 64-bit length forms, odd for the mask's tail.
    const sizes = [0, 1, 125, 126, 65535, 65536, 200_003];
    for (const size of sizes) {
      ws.sendBinaryWith(size, (out, at) => {
        for (let i = 0; i < size; i++) out[at + i] = (i * 31 + size) & 0xff;
      });
    }
    const got: Uint8Array[] = [];
    const parser = new FrameParser(
      {
        text: () => {},
        binary: (data) => got.push(data),
        ping: () => {},
        pong: () => {},
        close: () => {},
        fail: (_code, reason) => {
          throw new Error(reason);
        },
      },
      1 << 20,
      true,
    );
    const buf = new Uint8Array(64 * 1024);
    while (got.length < sizes.length) {
      const n = await server.read(buf);
      if (n === null) throw new Error("ended early");
      parser.push(buf.subarray(0, n));
    }
    got.forEach((data, k) => {
      const size = sizes[k]!;
      assert.equal(data.length, size);
      for (let i = 0; i < size; i++) assert.equal(data[i], (i * 31 + size) & 0xff);
    });
  } finally {
    const closed = new Promise<void>((resolve) => (ws.onclose = () => resolve()));
    server.close();
    ws.close();
    await closed;
    listener.close();
  }
});
