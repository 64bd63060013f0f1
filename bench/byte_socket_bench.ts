/**
 * Micro-benchmarks of the byte-socket layer the HTTP-CONNECT frontend and the agent's endpoint
 * connections move every tunneled byte through (`internal/byte_socket.ts`): the write queue
 * (`SocketWriter`) against awaiting each write, and the node:net adapter's read path
 * (`fromNodeSocket`) against reading the Duplex directly. `deno task bench:micro`.
 *
 * @module
 */

import { PassThrough } from "node:stream";
import { Buffer } from "node:buffer";
import { type ByteSocket, fromNodeSocket, SocketWriter } from "../transport/byte_socket.ts";

const CHUNK = 32 * 1024;
const CHUNKS = 64; // 2 MiB per iteration
const chunk = new Uint8Array(CHUNK).fill(0x5a);

/** A socket whose writes complete at once, taking at most `perWrite` bytes each. */
function instantSocket(perWrite = Infinity): ByteSocket {
  return {
    read: () => new Promise<number | null>(() => {}),
    write: (data) => Promise.resolve(Math.min(data.byteLength, perWrite)),
    close() {},
  };
}

Deno.bench("await each write, 64 × 32 KiB", {
  group: "write 2 MiB in 32 KiB chunks",
  baseline: true,
}, async () => {
  const socket = instantSocket();
  for (let i = 0; i < CHUNKS; i++) {
    let rest = chunk;
    while (rest.byteLength > 0) rest = rest.subarray(await socket.write(rest));
  }
});

/** Queues 64 chunks and waits until the last one is written (`flushed()` is for closing only). */
async function writeThrough(writer: SocketWriter): Promise<void> {
  const { promise, resolve } = Promise.withResolvers<void>();
  for (let i = 0; i < CHUNKS - 1; i++) writer.write(chunk);
  writer.write(chunk, resolve);
  await promise;
}

Deno.bench("SocketWriter, 64 × 32 KiB", { group: "write 2 MiB in 32 KiB chunks" }, async () => {
  await writeThrough(new SocketWriter(instantSocket(), () => {}));
});

Deno.bench("SocketWriter, 64 × 32 KiB, partial writes of 8 KiB", {
  group: "write 2 MiB in 32 KiB chunks",
}, async () => {
  await writeThrough(new SocketWriter(instantSocket(8 * 1024), () => {}));
});

Deno.bench("Duplex 'data' events, 64 × 32 KiB", {
  group: "read 2 MiB from a node:stream Duplex",
  baseline: true,
}, async () => {
  const duplex = new PassThrough();
  let got = 0;
  const done = new Promise<void>((resolve) =>
    duplex.on("data", (b: Uint8Array) => {
      got += b.byteLength;
      if (got >= CHUNK * CHUNKS) resolve();
    })
  );
  for (let i = 0; i < CHUNKS; i++) duplex.write(Buffer.from(chunk));
  await done;
});

Deno.bench("fromNodeSocket read(), 64 × 32 KiB", {
  group: "read 2 MiB from a node:stream Duplex",
}, async () => {
  const duplex = new PassThrough();
  const socket = fromNodeSocket(duplex);
  const buf = new Uint8Array(CHUNK);
  for (let i = 0; i < CHUNKS; i++) duplex.write(Buffer.from(chunk));
  let got = 0;
  while (got < CHUNK * CHUNKS) got += (await socket.read(buf)) ?? 0;
});
