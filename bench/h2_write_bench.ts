/**
 * Micro-benchmark of write coalescing in the native HTTP/2 transport, over a real loopback TCP
 * socket: 2 MiB of gRPC messages on 8 streams sent as 16 KiB DATA frames, (a) through the
 * {@linkcode WriteScheduler} (frames of all streams coalesced into writes of up to 256 KiB) and
 * (b) one socket write per frame, as an HTTP/2 stack without coalescing does.
 *
 * @module
 */

import { encodeFrame, FrameType } from "../transport/h2/frame.ts";
import { type DataSource, WriteScheduler } from "../transport/h2/write_scheduler.ts";

const TOTAL = 2 * 1024 * 1024;
const STREAMS = 8;
const FRAME = 16_384;

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const writer = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
const reader = await listener.accept();
let received = 0;
let want = 0;
let reached = () => {};
void (async () => {
  const buf = new Uint8Array(1 << 20);
  for (;;) {
    const n = await reader.read(buf).catch(() => null);
    if (n === null) return;
    received += n;
    if (received >= want) reached();
  }
})();
const arrived = (bytes: number) => {
  want = received + bytes;
  return new Promise<void>((resolve) => (reached = resolve));
};

/** A stream with `bytes` of message data. */
function source(id: number, bytes: number): DataSource {
  const data = new Uint8Array(bytes);
  let offset = 0;
  return {
    id,
    sendWindow: 1 << 30,
    pendingBytes: () => bytes - offset,
    take(limit, pieces) {
      const n = Math.min(limit, bytes - offset);
      pieces.push(data.subarray(offset, offset + n));
      offset += n;
      return n;
    },
    takeTail: () => undefined,
  };
}

const WIRE = TOTAL + (TOTAL / FRAME) * 9;

Deno.bench({ name: "2 MiB on 8 streams, coalesced writes", group: "h2-write", baseline: true }, async () => {
  const done = arrived(WIRE);
  const scheduler = new WriteScheduler(writer, (err) => {
    throw err;
  });
  scheduler.connWindow = 1 << 30;
  for (let i = 0; i < STREAMS; i++) scheduler.activate(source(2 * i + 1, TOTAL / STREAMS));
  await done;
});

const frames = Array.from({ length: TOTAL / FRAME }, (_, i) => encodeFrame(FrameType.DATA, 0, (i % STREAMS) * 2 + 1, new Uint8Array(FRAME)));

Deno.bench({ name: "2 MiB on 8 streams, one write per 16 KiB frame", group: "h2-write" }, async () => {
  const done = arrived(WIRE);
  for (const f of frames) {
    let rest = f;
    while (rest.length > 0) rest = rest.subarray(await writer.write(rest));
  }
  await done;
});
