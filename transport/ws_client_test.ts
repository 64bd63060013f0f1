/**
 * The minimal WebSocket client: the frame codec on hand-built frames (split at arbitrary read
 * boundaries), and the whole client against a real `Deno.serve` TLS server and against a scripted
 * raw TLS server (fragmented messages, pings, refusals, silence, protocol errors).
 */

import assert from "node:assert/strict";
import { generateTestPki, type TestPki } from "@knp/testing/certs";
import {
  type ClientWebSocket,
  connectWebSocket,
  type WebSocketCloseEvent,
  type WebSocketErrorEvent,
  WebSocketHandshakeError,
} from "./ws_client.ts";
import { encodeClientFrame, FrameParser } from "./ws_frame.ts";
import { acceptFor } from "./ws_handshake.ts";
import { webSocketConnector } from "../agent/ws_connector.ts";
import { KnpError } from "@knp/core/errors";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

let pkiPromise: Promise<TestPki> | undefined;
const pki = () => (pkiPromise ??= generateTestPki());

// ------------------------------------------------------------------------------------ helpers

/** A server frame (unmasked unless `mask` is given). */
function frame(
  opcode: number,
  payload: Uint8Array | string,
  options: { fin?: boolean; rsv?: number; mask?: Uint8Array } = {},
): Uint8Array {
  const data = typeof payload === "string" ? encoder.encode(payload) : payload;
  const len = data.length;
  const ext = len < 126 ? 0 : len < 0x10000 ? 2 : 8;
  const maskLen = options.mask ? 4 : 0;
  const out = new Uint8Array(2 + ext + maskLen + len);
  out[0] = ((options.fin ?? true) ? 0x80 : 0) | ((options.rsv ?? 0) << 4) | opcode;
  out[1] = (options.mask ? 0x80 : 0) | (ext === 0 ? len : ext === 2 ? 126 : 127);
  const view = new DataView(out.buffer);
  if (ext === 2) view.setUint16(2, len);
  if (ext === 8) view.setBigUint64(2, BigInt(len));
  let pos = 2 + ext;
  if (options.mask) {
    out.set(options.mask, pos);
    pos += 4;
    for (let i = 0; i < len; i++) out[pos + i] = data[i]! ^ options.mask[i & 3]!;
  } else out.set(data, pos);
  return out;
}

function closePayload(code: number, reason = ""): Uint8Array {
  const text = encoder.encode(reason);
  const out = new Uint8Array(2 + text.length);
  out[0] = code >> 8;
  out[1] = code & 0xff;
  out.set(text, 2);
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

function pattern(size: number, seed = 1): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

function digest(bytes: Uint8Array): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i]!, 16777619) >>> 0;
  return `${bytes.length}/${h.toString(16)}`;
}

/** Runs a parser over `chunks` and returns what it reported, one line per event. */
function parse(chunks: Uint8Array[], max?: number): string[] {
  const events: string[] = [];
  const parser = new FrameParser({
    text: (data) => events.push(`text:${data}`),
    binary: (data) => {
      assert.equal(data.byteOffset, 0);
      assert.equal(data.buffer.byteLength, data.length);
      events.push(`binary:${digest(data)}`);
    },
    ping: (payload) => events.push(`ping:${decoder.decode(payload)}`),
    pong: (payload) => events.push(`pong:${decoder.decode(payload)}`),
    close: (code, reason) => events.push(`close:${code}:${reason}`),
    fail: (code, reason) => events.push(`fail:${code}:${reason}`),
  }, max);
  for (const chunk of chunks) parser.push(chunk);
  return events;
}

/** Splits `bytes` into chunks of pseudo-random sizes from 1 to `max`. */
function randomSplit(bytes: Uint8Array, max: number, seed: number): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  let x = seed;
  for (let pos = 0; pos < bytes.length;) {
    x = (x * 1103515245 + 12345) >>> 0;
    const size = 1 + (x >>> 8) % max;
    chunks.push(bytes.slice(pos, pos + size));
    pos += size;
  }
  return chunks;
}

/** Decodes one masked client frame; checks it is masked. */
function decodeClientFrame(
  bytes: Uint8Array,
): { fin: boolean; opcode: number; payload: Uint8Array; size: number; key: string } {
  assert.ok(bytes[1]! & 0x80, "client frames are masked");
  let len = bytes[1]! & 0x7f;
  let pos = 2;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (len === 126) {
    len = view.getUint16(2);
    pos = 4;
  } else if (len === 127) {
    len = Number(view.getBigUint64(2));
    pos = 10;
  }
  const mask = bytes.subarray(pos, pos + 4);
  pos += 4;
  const payload = new Uint8Array(len);
  for (let i = 0; i < len; i++) payload[i] = bytes[pos + i]! ^ mask[i & 3]!;
  const key = mask.join(".");
  return { fin: (bytes[0]! & 0x80) !== 0, opcode: bytes[0]! & 0x0f, payload, size: pos + len, key };
}

/** Buffered reads from a connection. */
class Reader {
  #conn: Deno.Conn;
  #buf = new Uint8Array(0);
  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }
  async #fill(): Promise<boolean> {
    const chunk = new Uint8Array(64 * 1024);
    const n = await this.#conn.read(chunk);
    if (n === null) return false;
    this.#buf = concat(this.#buf, chunk.subarray(0, n));
    return true;
  }
  /** The request head (through the blank line). */
  async head(): Promise<string> {
    for (;;) {
      const text = new TextDecoder("latin1").decode(this.#buf);
      const end = text.indexOf("\r\n\r\n");
      if (end >= 0) {
        this.#buf = this.#buf.slice(end + 4);
        return text.slice(0, end);
      }
      if (!await this.#fill()) throw new Error("EOF before the request head");
    }
  }
  /** The next client frame, or null at end of stream. */
  async frame(): Promise<
    { fin: boolean; opcode: number; payload: Uint8Array; key: string } | null
  > {
    for (;;) {
      if (this.#buf.length >= 2) {
        const len7 = this.#buf[1]! & 0x7f;
        const need = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + 4;
        if (this.#buf.length >= need) {
          const f = decodeClientFrame(this.#buf);
          if (this.#buf.length >= f.size) {
            this.#buf = this.#buf.slice(f.size);
            return f;
          }
        }
      }
      if (!await this.#fill()) return null;
    }
  }
  /** Whether the peer ends the stream (reads until then). */
  async eof(): Promise<boolean> {
    try {
      while (await this.#fill()) { /* discard */ }
      return true;
    } catch {
      return false;
    }
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}

/**
 * A raw TLS server for one connection: answers the upgrade itself (unless `answer` says
 * otherwise), then runs `script`.
 */
async function rawServer(
  script: (conn: Deno.TlsConn, reader: Reader, request: string) => Promise<void>,
  answer: (request: string) => Promise<string> | string | null = async (request) => {
    const key = /sec-websocket-key: *(\S+)/i.exec(request)![1]!;
    return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      `Sec-WebSocket-Accept: ${await acceptFor(key)}\r\n\r\n`;
  },
) {
  const { server } = await pki();
  const listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: server.certPem,
    key: server.keyPem,
  });
  const done = (async () => {
    const conn = await listener.accept();
    try {
      const reader = new Reader(conn);
      const request = await reader.head();
      const response = await answer(request);
      if (response === null) {
        await reader.eof(); // never answer; wait for the client to give up
        return;
      }
      await writeAll(conn, encoder.encode(response));
      await script(conn, reader, request);
    } finally {
      try {
        conn.close();
      } catch { /* closed */ }
    }
  })();
  return {
    url: `wss://127.0.0.1:${listener.addr.port}/raw`,
    done,
    async [Symbol.asyncDispose]() {
      listener.close();
      await done;
    },
  };
}

/** A `Deno.serve` TLS server: echoes messages; `close-me` makes it close with 4001. */
async function echoServer() {
  const { server } = await pki();
  const closes: Promise<CloseEvent>[] = [];
  const headers: Headers[] = [];
  const http = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert: server.certPem,
    key: server.keyPem,
    onListen() {},
  }, (req) => {
    headers.push(new Headers(req.headers));
    if (req.headers.get("x-refuse")) {
      return new Response("agent x is not allowed: bad certificate\n", {
        status: 401,
        headers: { "content-type": "text/plain; charset=utf-8" },
      });
    }
    const { socket, response } = Deno.upgradeWebSocket(req, { idleTimeout: 0 });
    socket.binaryType = "arraybuffer";
    closes.push(new Promise((resolve) => (socket.onclose = resolve)));
    socket.onmessage = (e) => {
      if (e.data === "close-me") socket.close(4001, "server bye");
      else socket.send(e.data);
    };
    return response;
  });
  return {
    url: `wss://127.0.0.1:${http.addr.port}/echo`,
    port: http.addr.port,
    closes,
    headers,
    async [Symbol.asyncDispose]() {
      await http.shutdown();
    },
  };
}

/** Collects a client's messages and its close event. */
function watch(ws: ClientWebSocket) {
  const messages: (string | ArrayBuffer)[] = [];
  const errors: WebSocketErrorEvent[] = [];
  let wake: (() => void) | undefined;
  const closed = new Promise<WebSocketCloseEvent>((resolve) => {
    let count = 0;
    ws.onclose = (e) => {
      assert.equal(++count, 1, "onclose fires once");
      resolve(e);
      wake?.();
    };
  });
  ws.onmessage = (e) => {
    messages.push(e.data as string | ArrayBuffer);
    wake?.();
  };
  ws.onerror = (e) => void errors.push(e);
  return {
    closed,
    errors,
    async next(): Promise<string | ArrayBuffer> {
      while (messages.length === 0) {
        if (ws.readyState === ws.CLOSED) throw new Error("closed");
        await new Promise<void>((resolve) => (wake = resolve));
      }
      return messages.shift()!;
    },
  };
}

async function open(url: string, options: Parameters<typeof connectWebSocket>[1] = {}) {
  const ws = await connectWebSocket(url, { caCerts: [(await pki()).ca.certPem], ...options });
  return { ws, ...watch(ws) };
}

// ------------------------------------------------------------------------------- frame codec

Deno.test("ws client: parser reads text, binary, 16- and 64-bit lengths, split anywhere", () => {
  const mid = pattern(300, 2);
  const big = pattern(70_000, 3);
  const stream = concat(
    frame(1, "hello"),
    frame(2, new Uint8Array(0)),
    frame(2, mid),
    frame(9, "are you there"),
    frame(2, big),
    frame(1, "h\u00e9llo \u{1F600}"),
    frame(10, "pong"),
    frame(8, closePayload(1000, "done")),
    frame(1, "after the close frame: ignored"),
  );
  const expected = [
    "text:hello",
    `binary:${digest(new Uint8Array(0))}`,
    `binary:${digest(mid)}`,
    "ping:are you there",
    `binary:${digest(big)}`,
    "text:h\u00e9llo \u{1F600}",
    "pong:pong",
    "close:1000:done",
  ];
  assert.deepEqual(parse([stream]), expected);
  // Every split point of the small frames, plus 1-byte chunks and random sizes for everything.
  const small = stream.subarray(0, 2 + 5 + 2 + 4 + 300);
  for (let cut = 0; cut <= small.length; cut++) {
    assert.deepEqual(
      parse([small.subarray(0, cut), small.subarray(cut)]),
      expected.slice(0, 3),
      `cut at ${cut}`,
    );
  }
  assert.deepEqual(parse(randomSplit(stream, 1, 1)), expected);
  for (const [max, seed] of [[3, 7], [17, 8], [1000, 9], [20_000, 10]]) {
    assert.deepEqual(parse(randomSplit(stream, max!, seed!)), expected, `chunks ≤ ${max}`);
  }
});

Deno.test("ws client: parser reassembles fragmented messages, control frames in between", () => {
  const part = pattern(40_000, 5);
  const stream = concat(
    frame(1, "frag", { fin: false }),
    frame(9, "ping in the middle"),
    frame(0, "ment", { fin: false }),
    frame(0, "ed", { fin: true }),
    frame(2, part, { fin: false }),
    frame(0, part, { fin: false }),
    frame(0, new Uint8Array(0), { fin: false }),
    frame(0, part.subarray(0, 100), { fin: true }),
    frame(1, "\u00e9".repeat(2), { fin: false }).subarray(0, 4), // header + first bytes only…
  );
  // …the rest of that split text message, with a UTF-8 character cut across the fragments.
  const e9 = encoder.encode("\u00e9");
  const tail = concat(
    frame(1, e9.subarray(0, 1), { fin: false }),
    frame(0, concat(e9.subarray(1), e9), { fin: true }),
  );
  const whole = concat(stream.subarray(0, stream.length - 4), tail);
  const expected = [
    "ping:ping in the middle",
    "text:fragmented",
    `binary:${digest(concat(part, part, part.subarray(0, 100)))}`,
    "text:\u00e9\u00e9",
  ];
  assert.deepEqual(parse([whole]), expected);
  assert.deepEqual(parse(randomSplit(whole, 5, 3)), expected);
  assert.deepEqual(parse(randomSplit(whole, 9000, 4)), expected);
});

Deno.test("ws client: parser fails the connection on protocol errors, with the right code", () => {
  const cases: [string, Uint8Array, string, number?][] = [
    ["masked server frame", frame(1, "x", { mask: new Uint8Array([1, 2, 3, 4]) }), "fail:1002"],
    ["reserved bits", frame(1, "x", { rsv: 4 }), "fail:1002"],
    ["unknown data opcode", frame(3, "x"), "fail:1002"],
    ["unknown control opcode", frame(11, "x"), "fail:1002"],
    ["fragmented ping", frame(9, "x", { fin: false }), "fail:1002"],
    ["ping over 125 bytes", frame(9, pattern(126)), "fail:1002"],
    ["continuation first", frame(0, "x"), "fail:1002"],
    ["message inside a message", concat(frame(1, "a", { fin: false }), frame(1, "b")), "fail:1002"],
    ["1-byte close", frame(8, new Uint8Array([3])), "fail:1002"],
    ["close code 1005 on the wire", frame(8, closePayload(1005)), "fail:1002"],
    ["close code 2000", frame(8, closePayload(2000)), "fail:1002"],
    [
      "close reason not UTF-8",
      frame(8, concat(closePayload(1000), new Uint8Array([0xff]))),
      "fail:1007",
    ],
    ["text not UTF-8", frame(1, new Uint8Array([0x68, 0xc3])), "fail:1007"],
    ["message too big", frame(2, pattern(101)), "fail:1009", 100],
    [
      "fragments too big",
      concat(frame(2, pattern(60), { fin: false }), frame(0, pattern(41))),
      "fail:1009",
      100,
    ],
  ];
  for (const [what, bytes, prefix, max] of cases) {
    const events = parse(randomSplit(bytes, 3, 1), max);
    assert.equal(events.length, 1, `${what}: ${events}`);
    assert.ok(events[0]!.startsWith(prefix + ":"), `${what}: ${events[0]}`);
  }
  // A 64-bit length with the high bit set, and one past the limit, fail from the header alone.
  const huge = new Uint8Array([0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1]);
  assert.match(parse([huge])[0]!, /^fail:1002:/);
  const tooBig = new Uint8Array([0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0]); // 4 GiB, never allocated
  assert.match(parse([tooBig])[0]!, /^fail:1009:/);
  // Nothing after a failure is reported.
  assert.deepEqual(parse([concat(frame(3, "x"), frame(1, "later"))]).length, 1);
  // A close frame without a code reads as 1005.
  assert.deepEqual(parse([frame(8, new Uint8Array(0))]), ["close:1005:"]);
});

Deno.test("ws client: client frames are masked, FIN set, with 7-, 16- and 64-bit lengths", () => {
  for (const size of [0, 1, 3, 4, 5, 125, 126, 127, 65_535, 65_536, 70_001]) {
    const payload = pattern(size, size);
    const bytes = encodeClientFrame(2, payload);
    const f = decodeClientFrame(bytes);
    assert.equal(f.fin, true);
    assert.equal(f.opcode, 2);
    assert.equal(f.size, bytes.length);
    assert.equal(bytes[1]! & 0x7f, size < 126 ? size : size < 65_536 ? 126 : 127);
    assert.deepEqual(f.payload, payload, `size ${size}`);
  }
  // A fresh mask per frame.
  const masks = new Set<string>();
  for (let i = 0; i < 50; i++) {
    masks.add(encodeClientFrame(1, encoder.encode("x")).subarray(2, 6).join());
  }
  assert.ok(masks.size > 45, `${masks.size} distinct masks of 50`);
  // The payload given is not touched.
  const payload = pattern(1000);
  const copy = payload.slice();
  encodeClientFrame(2, payload.subarray(1)); // unaligned source
  assert.deepEqual(payload, copy);
});

Deno.test("ws client: a masked frame with key 0 is parsed as it is (knp-zero-mask-key)", () => {
  const got: Uint8Array[] = [];
  const parser = new FrameParser(
    {
      text: () => assert.fail("no text"),
      binary: (data) => void got.push(new Uint8Array(data)),
      ping: () => {},
      pong: () => {},
      close: () => {},
      fail: (code, reason) => assert.fail(`${code} ${reason}`),
    },
    1 << 20,
    true,
  );
  const payload = pattern(70_001, 5);
  parser.push(frame(2, payload, { mask: new Uint8Array(4) }));
  parser.push(frame(2, payload, { mask: new Uint8Array([1, 2, 3, 4]) }));
  assert.equal(got.length, 2);
  assert.deepEqual(got[0], payload);
  assert.deepEqual(got[1], payload);
  // The encoder's zero key leaves the payload in the clear.
  const zero = encodeClientFrame(2, payload.subarray(0, 300), true);
  assert.deepEqual(zero.subarray(4, 8), new Uint8Array(4));
  assert.deepEqual(zero.subarray(8), payload.subarray(0, 300));
});

for (const announced of [true, false]) {
  Deno.test(`ws client: frames use masking key 0 only when the 101 announces it (${announced})`, async () => {
    const frames: { key: string; payload: Uint8Array }[] = [];
    await using server = await rawServer(async (_conn, reader) => {
      for (let i = 0; i < 4; i++) frames.push((await reader.frame())!);
    }, async (request) => {
      const key = /sec-websocket-key: *(\S+)/i.exec(request)![1]!;
      return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${await acceptFor(key)}\r\n` +
        (announced ? "Knp-Zero-Mask-Key: 1\r\n" : "") + "\r\n";
    });
    const { ws, closed } = await open(server.url);
    ws.send("text");
    ws.send(pattern(1000, 7));
    ws.sendBinaryWith(3, (out, at) => out.set([7, 8, 9], at));
    ws.ping(new Uint8Array([1]));
    await server.done;
    await closed;
    assert.deepEqual(frames.map((f) => f.payload.length), [4, 1000, 3, 1]);
    assert.deepEqual(frames[1]!.payload, pattern(1000, 7));
    assert.deepEqual(frames[2]!.payload, new Uint8Array([7, 8, 9]));
    const zero = frames.filter((f) => f.key === "0.0.0.0").length;
    assert.equal(zero, announced ? 4 : 0);
  });
}

// ------------------------------------------------------------ against a real Deno.serve server

Deno.test("ws client: text and binary round trips; headers reach the server", async () => {
  await using server = await echoServer();
  const { ws, next, closed } = await open(server.url, { headers: { "x-knp-test": "yes" } });
  assert.equal(ws.readyState, ws.OPEN);
  assert.equal(ws.binaryType, "arraybuffer");
  assert.equal(server.headers[0]!.get("x-knp-test"), "yes");
  ws.send("hello");
  assert.equal(await next(), "hello");
  ws.send("h\u00e9llo \u{1F600}");
  assert.equal(await next(), "h\u00e9llo \u{1F600}");
  ws.send(new Uint8Array([1, 2, 3]));
  assert.deepEqual(new Uint8Array(await next() as ArrayBuffer), new Uint8Array([1, 2, 3]));
  ws.send(pattern(200).buffer);
  assert.deepEqual(new Uint8Array(await next() as ArrayBuffer), pattern(200));
  ws.send(new DataView(pattern(70_000).buffer, 5, 69_000));
  assert.deepEqual(
    new Uint8Array(await next() as ArrayBuffer),
    pattern(70_000).subarray(5, 69_005),
  );
  // Many messages in one turn arrive in order.
  for (let i = 0; i < 100; i++) ws.send(`m${i}`);
  for (let i = 0; i < 100; i++) assert.equal(await next(), `m${i}`);
  assert.equal(ws.bufferedAmount, 0);
  ws.close();
  const event = await closed;
  assert.equal(ws.readyState, ws.CLOSED);
  assert.equal(event.wasClean, true);
  assert.equal(event.code, 1005); // no code sent, none echoed
  ws.send("after close"); // dropped, no throw
});

Deno.test("ws client: a 3 MiB binary message both ways, byte-exact", async () => {
  await using server = await echoServer();
  const { ws, next, closed } = await open(server.url);
  const big = pattern(3 * 1024 * 1024, 42);
  ws.send(big);
  assert.ok(ws.bufferedAmount > 0, "queued, not yet written");
  const back = new Uint8Array(await next() as ArrayBuffer);
  assert.equal(back.length, big.length);
  assert.ok(back.every((b, i) => b === big[i]), "byte-exact");
  assert.equal(ws.bufferedAmount, 0);
  ws.close(1000);
  assert.equal((await closed).code, 1000);
});

Deno.test("ws client: close codes and reasons propagate both ways", async () => {
  await using server = await echoServer();
  // Client-initiated.
  const a = await open(server.url);
  a.ws.close(4000, "client bye");
  assert.equal(a.ws.readyState, a.ws.CLOSING);
  const seen = await server.closes[0]!;
  assert.equal(seen.code, 4000);
  assert.equal(seen.reason, "client bye");
  const ev = await a.closed;
  assert.deepEqual([ev.code, ev.reason, ev.wasClean], [4000, "client bye", true]);
  // Server-initiated.
  const b = await open(server.url);
  b.ws.send("close-me");
  const ev2 = await b.closed;
  assert.deepEqual([ev2.code, ev2.reason, ev2.wasClean], [4001, "server bye", true]);
  assert.equal((await server.closes[1]!).code, 4001);
  // Codes the link uses (1008, 1011), which the browser API refuses, go through; a long reason is
  // cut at 123 bytes on a character boundary.
  const c = await open(server.url);
  c.ws.close(1011, "\u00e9".repeat(100));
  const seen3 = await server.closes[2]!;
  assert.equal(seen3.code, 1011);
  assert.equal(seen3.reason, "\u00e9".repeat(61));
  await c.closed;
  assert.throws(() => c.ws.close(1005), /invalid close code/);
});

Deno.test("ws client: a 401 refusal surfaces the status line and the body", async () => {
  await using server = await echoServer();
  const err = await connectWebSocket(server.url, {
    caCerts: [(await pki()).ca.certPem],
    headers: { "x-refuse": "1" },
  }).then(() => undefined, (e) => e);
  assert.ok(err instanceof WebSocketHandshakeError, String(err));
  assert.equal(err.status, 401);
  assert.match(err.statusLine, /^HTTP\/1\.1 401/);
  assert.equal(err.body, "agent x is not allowed: bad certificate");
  assert.match(err.message, /401 Unauthorized: agent x is not allowed: bad certificate/);
});

Deno.test("ws client: the agent connector puts the server's refusal reason in its error", async () => {
  const { ca, server } = await pki();
  const refusing = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert: server.certPem,
    key: server.keyPem,
    onListen() {},
  }, () => new Response("agent a1: the agent sent no certificate\n", { status: 401 }));
  try {
    const connect = webSocketConnector({
      host: "127.0.0.1",
      port: refusing.addr.port,
      agentId: "a1",
      agentIdentifiers: "",
      tls: { ca: encoder.encode(ca.certPem) },
    });
    const err = await connect().then(() => undefined, (e) => e);
    assert.ok(err instanceof KnpError, String(err));
    assert.equal(err.code, "HANDSHAKE");
    assert.match(err.message, /the server refused the WebSocket link to wss:\/\/127\.0\.0\.1:/);
    assert.match(err.message, /401 Unauthorized: agent a1: the agent sent no certificate$/);
  } finally {
    await refusing.shutdown();
  }
});

Deno.test("ws client: with a client certificate (connectTls path) the link works too", async () => {
  await using server = await echoServer();
  const { client } = await pki();
  const { ws, next, closed } = await open(server.url, { cert: client.certPem, key: client.keyPem });
  ws.send("via connectTls");
  assert.equal(await next(), "via connectTls");
  ws.close(1000);
  await closed;
});

Deno.test("ws client: ws: URLs work over plain TCP", async () => {
  const http = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req, { idleTimeout: 0 });
    socket.onmessage = (e) => socket.send(e.data);
    return response;
  });
  try {
    const { ws, next, closed } = await open(`ws://127.0.0.1:${http.addr.port}/plain?x=1`);
    ws.send("plain");
    assert.equal(await next(), "plain");
    ws.close(1000);
    await closed;
  } finally {
    await http.shutdown();
  }
});

Deno.test("ws client: bad URLs and reserved headers are refused up front", async () => {
  await assert.rejects(connectWebSocket("https://127.0.0.1:1/"), SyntaxError);
  await assert.rejects(
    connectWebSocket("wss://127.0.0.1:1/", { headers: { "Sec-WebSocket-Key": "x" } }),
    TypeError,
  );
  await assert.rejects(
    connectWebSocket("wss://127.0.0.1:1/", { headers: { "x-a": "b\r\nInjected: 1" } }),
    TypeError,
  );
});

// ------------------------------------------------------------------ against a raw TLS server

Deno.test("ws client: a server that never answers the upgrade is dropped at the timeout", async () => {
  await using server = await rawServer(async () => {}, () => null);
  const err = await connectWebSocket(server.url, {
    caCerts: [(await pki()).ca.certPem],
    timeoutMs: 300,
  }).then(() => undefined, (e) => e);
  assert.ok(err instanceof DOMException, String(err));
  assert.equal(err.name, "TimeoutError");
});

Deno.test("ws client: … or when the signal aborts, with the signal's reason", async () => {
  await using server = await rawServer(async () => {}, () => null);
  const controller = new AbortController();
  const reason = new Error("gave up");
  setTimeout(() => controller.abort(reason), 200);
  const err = await connectWebSocket(server.url, {
    caCerts: [(await pki()).ca.certPem],
    signal: controller.signal,
  }).then(() => undefined, (e) => e);
  assert.equal(err, reason);
});

Deno.test("ws client: a wrong Sec-WebSocket-Accept or a non-HTTP answer is refused", async () => {
  {
    await using server = await rawServer(
      async () => {},
      () =>
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        "Sec-WebSocket-Accept: bm9wZQ==\r\n\r\n",
    );
    await assert.rejects(
      connectWebSocket(server.url, { caCerts: [(await pki()).ca.certPem] }),
      (e) => e instanceof WebSocketHandshakeError && /Sec-WebSocket-Accept/.test(e.message),
    );
  }
  {
    await using server = await rawServer(async () => {}, () => "SSH-2.0-OpenSSH\r\n\r\n");
    await assert.rejects(
      connectWebSocket(server.url, { caCerts: [(await pki()).ca.certPem] }),
      (e) => e instanceof WebSocketHandshakeError && /did not answer with HTTP/.test(e.message),
    );
  }
  {
    // A refusal with a chunked body.
    await using server = await rawServer(
      async () => {},
      () =>
        "HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n" +
        "6\r\nno way\r\n7\r\n, agent\r\n0\r\n\r\n",
    );
    const err = await connectWebSocket(server.url, { caCerts: [(await pki()).ca.certPem] })
      .then(() => undefined, (e) => e);
    assert.ok(err instanceof WebSocketHandshakeError);
    assert.equal(err.status, 403);
    assert.equal(err.body, "no way, agent");
  }
});

Deno.test("ws client: fragmented messages and pings from a raw server; pong echoes the ping", async () => {
  let pong: { opcode: number; payload: Uint8Array } | null = null;
  let clientClose: { opcode: number; payload: Uint8Array } | null = null;
  await using server = await rawServer(async (conn, reader) => {
    // Frames right behind the 101, in one write, split mid-header on purpose over two writes.
    const bytes = concat(
      frame(1, "hel", { fin: false }),
      frame(9, "ping!"),
      frame(0, "lo", { fin: true }),
      frame(2, pattern(100_000, 9), { fin: false }),
      frame(0, pattern(100, 10), { fin: true }),
      frame(8, closePayload(4002, "raw bye")),
    );
    await writeAll(conn, bytes.subarray(0, 5));
    await new Promise((r) => setTimeout(r, 20));
    await writeAll(conn, bytes.subarray(5));
    pong = await reader.frame();
    clientClose = await reader.frame();
  });
  const { next, closed } = await open(server.url);
  assert.equal(await next(), "hello");
  const binary = new Uint8Array(await next() as ArrayBuffer);
  assert.equal(digest(binary), digest(concat(pattern(100_000, 9), pattern(100, 10))));
  const ev = await closed;
  assert.deepEqual([ev.code, ev.reason, ev.wasClean], [4002, "raw bye", true]);
  await server.done;
  assert.equal(pong!.opcode, 10);
  assert.equal(decoder.decode(pong!.payload), "ping!");
  assert.equal(clientClose!.opcode, 8);
  assert.deepEqual(clientClose!.payload, closePayload(4002, "raw bye"));
});

Deno.test("ws client: a message over maxMessageBytes closes with 1009", async () => {
  let clientClose: { opcode: number; payload: Uint8Array } | null = null;
  await using server = await rawServer(async (conn, reader) => {
    await writeAll(conn, frame(2, pattern(2000)));
    clientClose = await reader.frame();
    await writeAll(conn, frame(8, closePayload(1009)));
  });
  const { closed, next } = await open(server.url, { maxMessageBytes: 1000 });
  const ev = await closed;
  assert.equal(ev.code, 1009);
  assert.equal(ev.wasClean, false);
  await server.done;
  assert.equal(clientClose!.opcode, 8);
  assert.equal((clientClose!.payload[0]! << 8) | clientClose!.payload[1]!, 1009);
  await assert.rejects(next());
});

Deno.test("ws client: a connection cut without a close frame reports 1006, error first", async () => {
  await using server = await rawServer(async (conn) => {
    await writeAll(conn, frame(1, "last words"));
  });
  const { next, closed, errors } = await open(server.url);
  assert.equal(await next(), "last words");
  const ev = await closed;
  assert.deepEqual([ev.code, ev.wasClean], [1006, false]);
  assert.equal(errors.length, 1);
});

Deno.test("ws client: close() gives up on a silent server after its bound", async () => {
  let clientClose: { opcode: number } | null = null;
  await using server = await rawServer(async (_conn, reader) => {
    clientClose = await reader.frame();
    await reader.eof(); // never answer the close; the client ends the connection
  });
  const { ws, closed } = await open(server.url);
  ws.close(1000, "bye");
  const ev = await closed;
  assert.deepEqual([ev.code, ev.wasClean], [1006, false]);
  await server.done;
  assert.equal(clientClose!.opcode, 8);
});
