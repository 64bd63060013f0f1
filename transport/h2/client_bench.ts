/**
 * The native HTTP/2 client against grpc-js's client, both downloading from and uploading to the
 * native server over loopback TCP in this process: 32 MiB of 64 KiB DATA packets per iteration
 * (`deno task bench:micro transport/h2/client_bench.ts`, the micro-benchmarks' named permissions).
 * One process runs both ends, so the numbers are the sum of client and server CPU; the ratio
 * between the clients is what matters.
 *
 * @module
 */

import { dataPacket, dialRequest } from "@knp/proto";
import { GrpcChannel } from "../grpc_channel.ts";
import type { PacketStream } from "../packet_stream.ts";
import { serveH2Grpc } from "./serve.ts";
import { H2GrpcChannel } from "./client_channel.ts";

const TOTAL = 32 * 1024 * 1024;
const CHUNK = 64 * 1024;
const PAYLOAD = new Uint8Array(CHUNK).fill(7);

/** Sends TOTAL bytes as DATA packets, respecting backpressure, then calls `done`. */
function pour(stream: PacketStream, done: () => void): void {
  let sent = 0;
  const more = () => {
    while (sent < TOTAL) {
      sent += CHUNK;
      if (!stream.send(dataPacket(1n, PAYLOAD)) && sent < TOTAL) return stream.onDrain(more);
    }
    done();
  };
  more();
}

/** Counts received DATA bytes; resolves at TOTAL. */
function drain(stream: PacketStream, onByte?: () => void): Promise<void> {
  const all = Promise.withResolvers<void>();
  let got = 0;
  stream.start({
    onPacket(p) {
      if (p.type !== "DATA") return onByte?.();
      got += p.data.data.length;
      if (got >= TOTAL) all.resolve();
    },
    onEnd() {},
  });
  return all.promise;
}

const server = await serveH2Grpc({
  service: "proxy",
  address: "127.0.0.1:0",
  onStream({ stream }) {
    let upload = false;
    stream.start({
      onPacket(p) {
        if (p.type === "DIAL_REQ") {
          upload = p.dialRequest.address === "upload";
          if (!upload) pour(stream, () => stream.close());
        } else if (upload && p.type === "DATA") {
          // Counted by the client's own end: the server only sinks.
        }
      },
      onEnd() {
        stream.close();
      },
    });
  },
});
const target = `127.0.0.1:${server.port}`;
const native = new H2GrpcChannel({ target });
const grpcJs = new GrpcChannel({ target });

for (const [name, channel] of [["native", native], ["grpc-js", grpcJs]] as const) {
  Deno.bench(`download 32 MiB, ${name} client`, { group: "download" }, async () => {
    const { stream } = await channel.openStream("proxy", {});
    const done = drain(stream);
    stream.send(dialRequest("download", 1n));
    await done;
    stream.close();
    await stream.done;
  });
  Deno.bench(`upload 32 MiB, ${name} client`, { group: "upload" }, async () => {
    const { stream } = await channel.openStream("proxy", {});
    stream.start({ onPacket() {}, onEnd() {} });
    stream.send(dialRequest("upload", 1n));
    await new Promise<void>((resolve) => pour(stream, resolve));
    stream.close();
    await stream.done;
  });
}

globalThis.addEventListener("unload", () => {
  native.close();
  grpcJs.close();
  void server.close();
});
