/**
 * Micro-benchmarks of the native HTTP/2 transport's receive path: splitting a read into frames
 * (16 KiB DATA frames, as grpc-go and grpc-js send them) and cutting the DATA into gRPC messages.
 *
 * @module
 */

import { encodeFrame, FrameParser, FrameType } from "../transport/h2/frame.ts";
import { MessageDeframer, writeMessagePrefix } from "../transport/h2/grpc_message.ts";

/** 256 KiB of DATA frames of 16 KiB each, carrying 32 KiB messages (as one socket read). */
const message = new Uint8Array(5 + 32 * 1024);
writeMessagePrefix(message, 0, 32 * 1024);
const stream = new Uint8Array(8 * message.length);
for (let i = 0; i < 8; i++) stream.set(message, i * message.length);
const frames: Uint8Array[] = [];
for (let at = 0; at < stream.length; at += 16_384) {
  frames.push(encodeFrame(FrameType.DATA, 0, 1, stream.subarray(at, at + 16_384)));
}
const read = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
frames.reduce((at, f) => (read.set(f, at), at + f.length), 0);

Deno.bench({
  name: "parse 256 KiB read into 16 KiB DATA frames",
  group: "h2-frame",
  baseline: true,
}, () => {
  const parser = new FrameParser();
  if (parser.push(read).length !== frames.length) throw new Error("bad parse");
});

Deno.bench({ name: "parse the same read in 4 KiB pieces", group: "h2-frame" }, () => {
  const parser = new FrameParser();
  let n = 0;
  for (let at = 0; at < read.length; at += 4096) {
    n += parser.push(read.subarray(at, at + 4096)).length;
  }
  if (n !== frames.length) throw new Error("bad parse");
});

Deno.bench({ name: "parse + deframe 256 KiB into 8 × 32 KiB messages", group: "h2-frame" }, () => {
  const parser = new FrameParser();
  const deframer = new MessageDeframer(4 << 20);
  let messages = 0;
  for (const f of parser.push(read)) deframer.push(f.payload, () => messages++);
  if (messages !== 8) throw new Error("bad deframe");
});
