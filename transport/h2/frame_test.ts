/**
 * The HTTP/2 frame codec with golden bytes (RFC 9113 §4.1 layout, big-endian): encoders of every
 * frame the server sends, the incremental parser (split input, size limit, zero-copy views), the
 * per-type checks, padding, and the gRPC message deframer.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  encodeFrame,
  ErrorCode,
  Flag,
  FrameParser,
  FrameType,
  goawayFrame,
  H2Error,
  headersFrames,
  parseSettings,
  pingFrame,
  rstStreamFrame,
  settingsFrame,
  unpadded,
  validateFrame,
  windowUpdateFrame,
} from "./frame.ts";
import {
  dataMessageHead,
  decodeGrpcMessage,
  encodeGrpcMessage,
  MESSAGE_PREFIX_BYTES,
  MessageDeframer,
  MessageError,
  VIEW_MIN_BYTES,
  writeMessagePrefix,
} from "./grpc_message.ts";
import { closeRequest, dataPacket, encodePacket, type Packet } from "@knp/proto";

const hex = (text: string) => Uint8Array.fromHex(text.replace(/\s+/g, ""));

Deno.test("frame encoders: golden bytes", () => {
  assert.deepEqual(
    settingsFrame(new Map([[0x4, 8 * 1024 * 1024], [0x6, 65536]])),
    hex("00000c 04 00 00000000  0004 00800000  0006 00010000"),
  );
  assert.deepEqual(settingsFrame(), hex("000000 04 01 00000000"));
  assert.deepEqual(
    pingFrame(hex("0102030405060708"), true),
    hex("000008 06 01 00000000 0102030405060708"),
  );
  assert.deepEqual(
    goawayFrame(5, ErrorCode.PROTOCOL_ERROR, "x"),
    hex("000009 07 00 00000000 00000005 00000001 78"),
  );
  assert.deepEqual(rstStreamFrame(3, ErrorCode.CANCEL), hex("000004 03 00 00000003 00000008"));
  assert.deepEqual(windowUpdateFrame(0, 0x7fffffff), hex("000004 08 00 00000000 7fffffff"));
  assert.deepEqual(
    encodeFrame(FrameType.DATA, Flag.END_STREAM, 0x7fffffff, hex("aa")),
    hex("000001 00 01 7fffffff aa"),
  );
});

Deno.test("headersFrames splits a block into HEADERS and CONTINUATION at the frame size", () => {
  const block = new Uint8Array(40_000).fill(7);
  const frames = new FrameParser().push(headersFrames(1, block, true, 16_384));
  assert.deepEqual(frames.map((f) => [f.type, f.flags, f.payload.length]), [
    [FrameType.HEADERS, Flag.END_STREAM, 16_384],
    [FrameType.CONTINUATION, 0, 16_384],
    [FrameType.CONTINUATION, Flag.END_HEADERS, 40_000 - 2 * 16_384],
  ]);
  const one = new FrameParser().push(headersFrames(3, new Uint8Array(0), false, 16_384));
  assert.deepEqual(one.map((f) => [f.type, f.flags, f.streamId]), [[
    FrameType.HEADERS,
    Flag.END_HEADERS,
    3,
  ]]);
});

Deno.test("FrameParser: frames split anywhere come out whole; the reserved bit is cleared", () => {
  const wire = new Uint8Array([
    ...hex("000003 00 00 80000001 616263"),
    ...pingFrame(hex("0000000000000001"), false),
    ...hex("000000 04 01 00000000"),
  ]);
  for (let cut = 0; cut <= wire.length; cut++) {
    const parser = new FrameParser();
    const frames = [...parser.push(wire.subarray(0, cut)), ...parser.push(wire.subarray(cut))];
    assert.deepEqual(frames.map((f) => [f.type, f.flags, f.streamId, f.payload.length]), [
      [FrameType.DATA, 0, 1, 3],
      [FrameType.PING, 0, 0, 8],
      [FrameType.SETTINGS, Flag.ACK, 0, 0],
    ]);
    assert.equal(parser.pendingBytes, 0);
  }
  const whole = new FrameParser().push(wire)[0]!;
  assert.equal(whole.payload.buffer, wire.buffer, "a frame within one chunk is a view, not a copy");
});

Deno.test("FrameParser refuses a frame above its max frame size", () => {
  const parser = new FrameParser(16_384);
  assert.throws(() => parser.push(hex("004001 00 00 00000001")), (e: unknown) => {
    return e instanceof H2Error && e.h2Code === ErrorCode.FRAME_SIZE_ERROR && e.streamId === 0;
  });
});

Deno.test("validateFrame: sizes and stream ids per type", () => {
  const bad: [string, number, number][] = [
    ["000007 06 00 00000000 00000000000000", ErrorCode.FRAME_SIZE_ERROR, 0], // PING of 7
    ["000008 06 00 00000001 0000000000000000", ErrorCode.PROTOCOL_ERROR, 0], // PING on a stream
    ["000003 04 00 00000000 000000", ErrorCode.FRAME_SIZE_ERROR, 0], // SETTINGS of 3
    ["000006 04 01 00000000 000400000000", ErrorCode.FRAME_SIZE_ERROR, 0], // SETTINGS ack with payload
    ["000004 00 00 00000000 00000000", ErrorCode.PROTOCOL_ERROR, 0], // DATA on stream 0
    ["000003 08 00 00000000 000001", ErrorCode.FRAME_SIZE_ERROR, 0], // WINDOW_UPDATE of 3
    ["000004 02 00 00000003 00000000", ErrorCode.FRAME_SIZE_ERROR, 3], // PRIORITY of 4: stream error
    ["000005 03 00 00000001 0000000000", ErrorCode.FRAME_SIZE_ERROR, 0], // RST_STREAM of 5
    ["000004 07 00 00000000 00000000", ErrorCode.FRAME_SIZE_ERROR, 0], // GOAWAY of 4
  ];
  for (const [wire, code, stream] of bad) {
    const [frame] = new FrameParser().push(hex(wire));
    assert.throws(() => validateFrame(frame!), (e: unknown) => {
      return e instanceof H2Error && e.h2Code === code && e.streamId === stream;
    }, wire);
  }
  const [unknown] = new FrameParser().push(hex("000001 ff 00 00000007 00"));
  validateFrame(unknown!);
});

Deno.test("unpadded strips padding and priority; padding as long as the frame is an error", () => {
  const [data] = new FrameParser().push(hex("000006 00 08 00000001 02 616263 0000"));
  assert.deepEqual(unpadded(data!), hex("616263"));
  const [headers] = new FrameParser().push(hex("000008 01 2c 00000001 01 00000000 10 82 00"));
  assert.deepEqual(unpadded(headers!), hex("82"));
  const [bad] = new FrameParser().push(hex("000003 00 08 00000001 03 6162"));
  assert.throws(
    () => unpadded(bad!),
    (e: unknown) => e instanceof H2Error && e.h2Code === ErrorCode.PROTOCOL_ERROR,
  );
  assert.deepEqual(parseSettings(hex("0004 00800000 0005 00004000")), [[4, 8 * 1024 * 1024], [
    5,
    16_384,
  ]]);
});

Deno.test("MessageDeframer: messages split anywhere, copies of their own, limits enforced", () => {
  const wire = hex("00 00000003 616263 00 00000000 00 00000002 6465");
  for (let cut = 0; cut <= wire.length; cut++) {
    const d = new MessageDeframer(16);
    const got: string[] = [];
    const collect = (m: Uint8Array) => got.push(new TextDecoder().decode(m));
    d.push(wire.subarray(0, cut), collect);
    d.push(wire.subarray(cut), collect);
    assert.deepEqual(got, ["abc", "", "de"], `cut at ${cut}`);
    assert.ok(d.idle);
  }
  // The chunk may be a read buffer reused right after: no message is a view of it.
  const messages: Uint8Array[] = [];
  new MessageDeframer(16).push(wire, (m) => messages.push(m));
  assert.ok(messages.every((m) => m.buffer !== wire.buffer));
  assert.throws(
    () => new MessageDeframer(2).push(hex("00 00000003 616263"), () => {}),
    (e: unknown) => {
      return e instanceof MessageError && e.status === 8 && /larger than max/.test(e.message);
    },
  );
  assert.throws(() => new MessageDeframer(9).push(hex("01 00000001 61"), () => {}), MessageError);
});

Deno.test("grpc-message percent-encoding round-trips", () => {
  assert.equal(encodeGrpcMessage("a b%c\nü"), "a b%25c%0A%C3%BC");
  assert.equal(decodeGrpcMessage("a b%25c%0A%C3%BC"), "a b%c\nü");
});

Deno.test("FrameParser: byte by byte; after a split frame the chunk's frames are views", () => {
  const data = new Uint8Array(300).fill(7);
  const wire = new Uint8Array([
    ...encodeFrame(FrameType.DATA, 0, 1, data),
    ...pingFrame(hex("0000000000000002"), false),
    ...encodeFrame(FrameType.DATA, Flag.END_STREAM, 3, data),
  ]);
  const parser = new FrameParser();
  const frames = [];
  for (let i = 0; i < wire.length; i++) frames.push(...parser.push(wire.subarray(i, i + 1)));
  assert.deepEqual(frames.map((f) => [f.type, f.streamId, f.payload.length]), [
    [FrameType.DATA, 1, 300],
    [FrameType.PING, 0, 8],
    [FrameType.DATA, 3, 300],
  ]);
  assert.deepEqual(frames[2]!.payload, data);
  // The first frame is cut: the second chunk completes it, and its other frames are views.
  const second = wire.subarray(100);
  const split = [...parser.push(wire.subarray(0, 100)), ...parser.push(second)];
  assert.equal(split.length, 3);
  assert.deepEqual(split[0]!.payload, data);
  assert.equal(split[1]!.payload.buffer, second.buffer);
  assert.equal(split[2]!.payload.buffer, second.buffer);
  assert.equal(parser.pendingBytes, 0);
});

Deno.test("dataMessageHead + payload is the whole gRPC message of a DATA packet", () => {
  for (const connectId of [1n, 300n, 1n << 40n, (1n << 63n) - 1n, -1n]) {
    for (const error of ["", "e", "x".repeat(200)]) {
      for (const size of [VIEW_MIN_BYTES, 70_000, 1 << 21]) {
        const packet: Packet = {
          type: "DATA",
          data: { connectId, error, data: new Uint8Array(size).fill(3) },
        };
        const head = dataMessageHead(packet)!;
        const encoded = encodePacket(packet);
        const whole = new Uint8Array(MESSAGE_PREFIX_BYTES + encoded.length);
        writeMessagePrefix(whole, 0, encoded.length);
        whole.set(encoded, MESSAGE_PREFIX_BYTES);
        assert.deepEqual(
          new Uint8Array([...head, ...packet.data.data]),
          whole,
          `connectId ${connectId}, error ${error.length}, size ${size}`,
        );
      }
    }
  }
  assert.equal(dataMessageHead(dataPacket(1n, new Uint8Array(VIEW_MIN_BYTES - 1))), undefined);
  assert.equal(dataMessageHead(closeRequest(1n)), undefined);
});

Deno.test("FrameParser: a frame spread over 3+ reads of one reused buffer keeps its bytes", () => {
  const payload = new Uint8Array(3000).map((_, i) => i % 251);
  const wire = encodeFrame(FrameType.DATA, 0, 1, payload);
  const parser = new FrameParser();
  const buffer = new Uint8Array(1024); // the caller's read buffer, reused for every read
  const frames = [];
  for (let at = 0; at < wire.length; at += buffer.length) {
    const piece = wire.subarray(at, at + buffer.length);
    buffer.set(piece);
    frames.push(...parser.push(buffer.subarray(0, piece.length)));
    buffer.fill(0xee); // the next read overwrites the buffer
  }
  assert.equal(frames.length, 1);
  assert.deepEqual(frames[0]!.payload, payload);
});
