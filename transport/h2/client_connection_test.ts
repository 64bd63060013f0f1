/**
 * The native HTTP/2 client connection against a raw-frame server over a real TCP socket, for what
 * well-behaved servers seldom do on cue: RST_STREAM, GOAWAY with a stream above its last id, a
 * silent server (keepalive timeout, on an injected clock), and request headers as sent.
 *
 * @module
 */

import assert from "node:assert/strict";
import { KnpError } from "@knp/core/errors";
import { fakeTimers } from "@knp/testing";
import { dataPacket, encodePacket } from "@knp/proto";
import { encodeFrame, type Frame, FrameParser, FrameType, goawayFrame } from "./frame.ts";
import { headersFrames, PREFACE } from "./frame.ts";
import { pingFrame, rstStreamFrame, settingsFrame } from "./frame.ts";
import { type HeaderField, HpackDecoder, HpackEncoder } from "./hpack.ts";
import { H2GrpcChannel } from "./client_channel.ts";
import { H2ClientConnection } from "./client_connection.ts";
import { H2ClientStream } from "./client_stream.ts";

/** One accepted connection of a raw server: frames in order, and a way to write. */
class RawPeer {
  #conn: Deno.Conn;
  #parser = new FrameParser(1 << 20);
  #frames: Frame[] = [];
  #wake: (() => void) | undefined;
  #preface = 0;
  #encoder = new HpackEncoder();
  decoder = new HpackDecoder(4096, 1 << 16);

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
    void this.#read();
  }

  async #read(): Promise<void> {
    const buf = new Uint8Array(65536);
    try {
      for (;;) {
        const n = await this.#conn.read(buf);
        if (n === null) break;
        let chunk = buf.subarray(0, n);
        const skip = Math.min(PREFACE.length - this.#preface, chunk.length);
        this.#preface += skip;
        chunk = chunk.subarray(skip);
        for (const f of this.#parser.push(chunk)) {
          this.#frames.push({ ...f, payload: f.payload.slice() });
        }
        this.#wake?.();
      }
    } catch { /* closed */ }
    this.#wake?.();
  }

  /** The next frame of `type` (others before it are dropped). */
  async next(type: number): Promise<Frame> {
    for (;;) {
      const at = this.#frames.findIndex((f) => f.type === type);
      if (at >= 0) return this.#frames.splice(0, at + 1)[at]!;
      this.#frames = [];
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  async write(...frames: Uint8Array[]): Promise<void> {
    for (const f of frames) await this.#conn.write(f);
  }

  headers(id: number, fields: HeaderField[], end: boolean): Uint8Array {
    return headersFrames(id, this.#encoder.encode(fields), end, 16384);
  }

  close(): void {
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }
}

/** A DATA frame with one gRPC message: a DATA packet of connection `id`. */
function messageFrame(streamId: number, id: number, payload = new Uint8Array([id])): Uint8Array {
  const packet = encodePacket(dataPacket(BigInt(id), payload));
  const body = new Uint8Array(5 + packet.length);
  new DataView(body.buffer).setUint32(1, packet.length);
  body.set(packet, 5);
  return encodeFrame(FrameType.DATA, 0, streamId, body);
}

const OK_HEADERS: HeaderField[] = [[":status", "200"], ["content-type", "application/grpc"]];

async function withRawServer(
  body: (target: string, accept: () => Promise<RawPeer>) => Promise<void>,
) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const peers: RawPeer[] = [];
  const accept = async () => {
    const peer = new RawPeer(await listener.accept());
    peers.push(peer);
    await peer.write(settingsFrame(new Map()));
    return peer;
  };
  try {
    await body(`127.0.0.1:${listener.addr.port}`, accept);
  } finally {
    for (const p of peers) p.close();
    listener.close();
  }
}

Deno.test("h2 client connection: request headers, then the server's RST_STREAM", async () => {
  await withRawServer(async (target, accept) => {
    const channel = new H2GrpcChannel({ target });
    try {
      const opened = channel.openStream("proxy", { "user-agent": "t" }, { awaitHeaders: true });
      const peer = await accept();
      const headers = await peer.next(FrameType.HEADERS);
      const fields = new Map(peer.decoder.decode(headers.payload));
      assert.equal(fields.get(":method"), "POST");
      assert.equal(fields.get(":path"), "/ProxyService/Proxy");
      assert.equal(fields.get(":scheme"), "http");
      assert.equal(fields.get(":authority"), target);
      assert.equal(fields.get("content-type"), "application/grpc");
      assert.equal(fields.get("te"), "trailers");
      assert.equal(fields.get("user-agent"), "t");
      await peer.write(peer.headers(headers.streamId, OK_HEADERS, false));
      const { stream } = await opened;
      stream.start({ onPacket() {}, onEnd() {} });
      await peer.write(rstStreamFrame(headers.streamId, 8));
      const error = await stream.done;
      assert.ok(error instanceof KnpError);
      assert.equal(error.message, "CANCELLED: Received RST_STREAM with code 8");
      assert.equal(stream.send(dataPacket(1n, new Uint8Array(1))), false);
    } finally {
      channel.close();
    }
  });
});

Deno.test("h2 client connection: GOAWAY refuses the later stream, the earlier one finishes", async () => {
  await withRawServer(async (target, accept) => {
    const channel = new H2GrpcChannel({ target });
    try {
      const first = await channel.openStream("proxy", {});
      const peer = await accept();
      const second = await channel.openStream("proxy", {});
      const h1 = await peer.next(FrameType.HEADERS);
      const h3 = await peer.next(FrameType.HEADERS);
      assert.deepEqual([h1.streamId, h3.streamId], [1, 3]);
      await peer.write(goawayFrame(1, 0, "bye"));
      const refused = await second.stream.done;
      assert.ok(refused instanceof KnpError);
      assert.match(refused.message, /^UNAVAILABLE: stream refused by GOAWAY \(code 0, bye\)/);
      // A new stream goes to a new connection; the first still finishes on the old one.
      const third = await channel.openStream("proxy", {});
      const peer2 = await accept();
      assert.equal((await peer2.next(FrameType.HEADERS)).streamId, 1);
      await peer.write(
        peer.headers(1, OK_HEADERS, false),
        peer.headers(1, [["grpc-status", "0"]], true),
      );
      first.stream.start({ onPacket() {}, onEnd() {} });
      assert.equal(await first.stream.done, undefined);
      third.stream.close(new KnpError("TUNNEL_CLOSED", "done"));
      assert.equal((await peer2.next(FrameType.RST_STREAM)).streamId, 1);
    } finally {
      channel.close();
    }
  });
});

Deno.test("h2 client connection: a silent server ends the calls with TIMEOUT", async () => {
  const { clock, timers } = fakeTimers();
  await withRawServer(async (target, accept) => {
    const keepalive = { intervalMs: 1000, timeoutMs: 500 };
    const channel = new H2GrpcChannel({ target, keepalive, timers });
    try {
      const { stream } = await channel.openStream("proxy", {});
      const peer = await accept();
      await peer.next(FrameType.HEADERS);
      // The client read our SETTINGS once it ACKs them: from then on, only the clock moves.
      await peer.next(FrameType.SETTINGS);
      clock.tick(1000);
      const ping = await peer.next(FrameType.PING);
      assert.equal(ping.flags, 0);
      clock.tick(499);
      assert.equal(stream.closed, false);
      clock.tick(1);
      const error = await stream.done;
      assert.ok(error instanceof KnpError);
      assert.equal(error.code, "TIMEOUT");
      await peer.next(FrameType.GOAWAY);
    } finally {
      channel.close();
    }
  });
});

Deno.test("h2 client connection: answered pings keep the connection", async () => {
  const { clock, timers } = fakeTimers();
  await withRawServer(async (target, accept) => {
    const channel = new H2GrpcChannel({
      target,
      keepalive: { intervalMs: 1000, timeoutMs: 500 },
      timers,
    });
    try {
      const { stream } = await channel.openStream("proxy", {});
      let arrived = Promise.withResolvers<void>();
      stream.start({ onPacket: () => arrived.resolve(), onEnd() {} });
      const peer = await accept();
      const { streamId } = await peer.next(FrameType.HEADERS);
      await peer.write(peer.headers(streamId, OK_HEADERS, false));
      for (let i = 0; i < 3; i++) {
        clock.tick(i === 0 ? 1000 : 1); // pings at 1000, 2000, 3000
        const ping = await peer.next(FrameType.PING);
        // The client read our ack once it delivers the message written after it.
        await peer.write(pingFrame(ping.payload, true), messageFrame(streamId, i));
        await arrived.promise;
        arrived = Promise.withResolvers<void>();
        clock.tick(999); // past the ping's 500 ms deadline
      }
      assert.equal(stream.closed, false);
    } finally {
      channel.close();
    }
  });
});

Deno.test("h2 client connection: a frame split across many small reads arrives intact", async () => {
  await withRawServer(async (target, accept) => {
    const [hostname, port] = target.split(":");
    const tcp = await Deno.connect({ hostname: hostname!, port: Number(port) });
    // The real socket, read at most 700 bytes at a time: a 12 KB frame takes many reads.
    const socket = {
      read: (buffer: Uint8Array) => tcp.read(buffer.subarray(0, 700)),
      write: (data: Uint8Array) => tcp.write(data),
      close: () => tcp.close(),
    };
    const conn = new H2ClientConnection(socket, {
      peer: target,
      authority: target,
      scheme: "http",
      maxMessageBytes: 1 << 20,
    });
    conn.start();
    const stream = new H2ClientStream(target, 1 << 20);
    conn.open(stream, "/ProxyService/Proxy", {});
    try {
      const got = Promise.withResolvers<Uint8Array>();
      stream.start({
        onPacket: (p) => p.type === "DATA" && got.resolve(p.data.data),
        onEnd() {},
      });
      const peer = await accept();
      const { streamId } = await peer.next(FrameType.HEADERS);
      await peer.write(peer.headers(streamId, OK_HEADERS, false));
      const payload = new Uint8Array(12_000).map((_, i) => (i * 7) % 251);
      await peer.write(messageFrame(streamId, 1, payload));
      assert.deepEqual(await got.promise, payload);
    } finally {
      conn.abort();
    }
  });
});

Deno.test("h2 client connection: close() gives a half-closed call a grace, then cuts it", async () => {
  const { clock, timers } = fakeTimers();
  await withRawServer(async (target, accept) => {
    const channel = new H2GrpcChannel({ target, timers });
    const { stream } = await channel.openStream("proxy", {});
    stream.start({ onPacket() {}, onEnd() {} });
    const peer = await accept();
    await peer.next(FrameType.HEADERS);
    stream.close();
    channel.close();
    const end = await peer.next(FrameType.DATA);
    assert.equal(end.flags & 0x1, 0x1);
    clock.tick(9_999);
    assert.equal(stream.ended, false);
    clock.tick(1);
    const error = await stream.done;
    assert.ok(error instanceof KnpError);
    assert.match(error.message, /^UNAVAILABLE: connection to .* failed: connection closed/);
    await peer.next(FrameType.GOAWAY);
  });
});
