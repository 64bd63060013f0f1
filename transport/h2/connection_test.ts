/**
 * The native HTTP/2 server connection driven frame by frame over a real TCP socket: the opening
 * SETTINGS and window, PING answers, a gRPC call with trailers, RST_STREAM from the client,
 * flow control on the server's sending side, and connection errors ending in GOAWAY.
 *
 * @module
 */

import assert from "node:assert/strict";
import { KnpError } from "@knp/core/errors";
import { dataPacket, encodePacket } from "@knp/proto";
import { keepaliveFor } from "../keepalive.ts";
import type { PacketStream } from "../packet_stream.ts";
import {
  encodeFrame,
  ErrorCode,
  Flag,
  type Frame,
  FrameParser,
  FrameType,
  PREFACE,
} from "./frame.ts";
import { parseSettings, pingFrame, readU32, rstStreamFrame, settingsFrame } from "./frame.ts";
import { windowUpdateFrame } from "./frame.ts";
import { HpackDecoder, HpackEncoder } from "./hpack.ts";
import { serveH2Grpc } from "./serve.ts";
import { writeMessagePrefix } from "./grpc_message.ts";

/** A hand-driven HTTP/2 client. */
class RawClient {
  #parser = new FrameParser(1 << 24);
  #queue: Frame[] = [];
  #encoder = new HpackEncoder();
  decoder = new HpackDecoder();
  constructor(readonly conn: Deno.Conn) {}

  static async open(port: number, settings = new Map<number, number>()): Promise<RawClient> {
    const client = new RawClient(await Deno.connect({ hostname: "127.0.0.1", port }));
    await client.write(PREFACE, settingsFrame(settings));
    return client;
  }

  async write(...parts: Uint8Array[]): Promise<void> {
    for (const p of parts) {
      let rest = p;
      while (rest.length > 0) rest = rest.subarray(await this.conn.write(rest));
    }
  }

  request(id: number, path = "/ProxyService/Proxy", endStream = false): Uint8Array {
    const block = this.#encoder.encode([
      [":method", "POST"],
      [":scheme", "http"],
      [":path", path],
      [":authority", "localhost"],
      ["content-type", "application/grpc"],
      ["te", "trailers"],
    ]);
    return encodeFrame(
      FrameType.HEADERS,
      Flag.END_HEADERS | (endStream ? Flag.END_STREAM : 0),
      id,
      block,
    );
  }

  /** The next frame matching `match` (others are dropped); undefined at EOF. */
  async next(match: (f: Frame) => boolean = () => true): Promise<Frame | undefined> {
    for (;;) {
      while (this.#queue.length > 0) {
        const f = this.#queue.shift()!;
        if (f.type === FrameType.HEADERS) f.payload = f.payload.slice();
        if (match(f)) return f;
      }
      const buf = new Uint8Array(64 * 1024);
      const n = await this.conn.read(buf).catch(() => null);
      if (n === null) return undefined;
      this.#queue.push(...this.#parser.push(buf.subarray(0, n)));
    }
  }
}

function message(packetBytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + packetBytes.length);
  writeMessagePrefix(out, 0, packetBytes.length);
  out.set(packetBytes, 5);
  return out;
}

async function server(onStream: (stream: PacketStream) => void = () => {}) {
  return await serveH2Grpc({
    service: "proxy",
    address: "127.0.0.1:0",
    onStream: (incoming) => onStream(incoming.stream),
  });
}

Deno.test("h2 connection: opens with SETTINGS and a 16 MiB window, answers PING", async () => {
  const s = await server();
  const client = await RawClient.open(s.port);
  try {
    const settings = await client.next((f) => f.type === FrameType.SETTINGS);
    assert.deepEqual(new Map(parseSettings(settings!.payload)).get(0x4), 8 * 1024 * 1024);
    const window = await client.next((f) => f.type === FrameType.WINDOW_UPDATE);
    assert.equal(readU32(window!.payload, 0), 16 * 1024 * 1024 - 65_535);
    const ack = await client.next((f) => f.type === FrameType.SETTINGS);
    assert.equal(ack!.flags, Flag.ACK);
    await client.write(pingFrame(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]), false));
    const pong = await client.next((f) => f.type === FrameType.PING);
    assert.equal(pong!.flags, Flag.ACK);
    assert.deepEqual([...pong!.payload], [1, 2, 3, 4, 5, 6, 7, 8]);
  } finally {
    client.conn.close();
    await s.close();
  }
});

Deno.test("h2 connection: a call gets headers, data within the window, then trailers", async () => {
  const s = await server((stream) => {
    stream.start({
      onPacket: () => {
        stream.send(dataPacket(1n, new Uint8Array(100)));
        stream.close();
      },
      onEnd() {},
    });
  });
  // The client allows 10 bytes per stream: the 100-byte reply waits for WINDOW_UPDATEs.
  const client = await RawClient.open(s.port, new Map([[0x4, 10]]));
  try {
    const body = message(encodePacket(dataPacket(1n, new Uint8Array([1]))));
    await client.write(client.request(1), encodeFrame(FrameType.DATA, 0, 1, body));
    const headers = await client.next((f) => f.type === FrameType.HEADERS);
    assert.deepEqual(client.decoder.decode(headers!.payload).slice(0, 2), [
      [":status", "200"],
      ["content-type", "application/grpc"],
    ]);
    const first = await client.next((f) => f.type === FrameType.DATA);
    assert.equal(first!.payload.length, 10);
    await client.write(windowUpdateFrame(1, 1000));
    let received = first!.payload.length;
    while (received < 5 + 100 + 6) {
      const more = await client.next((f) =>
        f.type === FrameType.DATA || f.type === FrameType.HEADERS
      );
      assert.equal(more!.type, FrameType.DATA, "trailers come after all data");
      received += more!.payload.length;
    }
    const trailers = await client.next((f) => f.type === FrameType.HEADERS);
    assert.equal(trailers!.flags & Flag.END_STREAM, Flag.END_STREAM);
    assert.deepEqual(client.decoder.decode(trailers!.payload), [["grpc-status", "0"]]);
    const reset = await client.next((f) => f.type === FrameType.RST_STREAM);
    assert.equal(readU32(reset!.payload, 0), ErrorCode.NO_ERROR);
  } finally {
    client.conn.close();
    await s.close();
  }
});

Deno.test("h2 connection: RST_STREAM from the client ends the stream with an error", async () => {
  const opened = Promise.withResolvers<PacketStream>();
  const s = await server((stream) => {
    stream.start({ onPacket() {}, onEnd() {} });
    opened.resolve(stream);
  });
  const client = await RawClient.open(s.port);
  try {
    await client.write(client.request(1));
    const stream = await opened.promise;
    await client.write(rstStreamFrame(1, ErrorCode.CANCEL));
    const error = await stream.done;
    assert.ok(error instanceof KnpError);
    assert.equal(error.code, "TUNNEL_CLOSED");
    assert.match(error.message, /cancelled by peer/);
  } finally {
    client.conn.close();
    await s.close();
  }
});

Deno.test("h2 connection: a protocol violation ends the connection with GOAWAY", async () => {
  const opened = Promise.withResolvers<PacketStream>();
  const s = await server((stream) => {
    stream.start({ onPacket() {}, onEnd() {} });
    opened.resolve(stream);
  });
  const client = await RawClient.open(s.port);
  try {
    await client.write(client.request(1));
    const stream = await opened.promise;
    // DATA on stream 0 is a connection error of type PROTOCOL_ERROR.
    await client.write(encodeFrame(FrameType.DATA, 0, 0, new Uint8Array(1)));
    const goaway = await client.next((f) => f.type === FrameType.GOAWAY);
    assert.equal(readU32(goaway!.payload, 0), 1, "last stream id");
    assert.equal(readU32(goaway!.payload, 4), ErrorCode.PROTOCOL_ERROR);
    assert.equal(await client.next(), undefined, "then the connection closes");
    const error = await stream.done;
    assert.ok(error instanceof KnpError);
    assert.equal(error.code, "TUNNEL_CLOSED");
  } finally {
    client.conn.close();
    await s.close();
  }
});

Deno.test("h2 connection: keepalive pings a silent client and ends its streams with TIMEOUT", async () => {
  const opened = Promise.withResolvers<PacketStream>();
  const s = await serveH2Grpc({
    service: "proxy",
    address: "127.0.0.1:0",
    keepalive: { intervalMs: 20, timeoutMs: 50 },
    onStream: (incoming) => {
      incoming.stream.start({ onPacket() {}, onEnd() {} });
      opened.resolve(incoming.stream);
    },
  });
  const client = await RawClient.open(s.port);
  try {
    await client.write(client.request(1));
    const ping = await client.next((f) => f.type === FrameType.PING);
    assert.equal(ping!.flags, 0, "the server pings");
    const error = await (await opened.promise).done;
    assert.ok(error instanceof KnpError);
    assert.equal(error.code, "TIMEOUT");
  } finally {
    client.conn.close();
    await s.close();
  }
});

Deno.test("keepaliveFor is what serveH2Grpc uses without explicit keepalive", () => {
  assert.deepEqual(keepaliveFor(30_000), { intervalMs: 30_000, timeoutMs: 20_000 });
});
