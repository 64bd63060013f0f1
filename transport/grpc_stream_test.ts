/** The grpc-js adapter over a real plaintext HTTP/2 connection: how streams end (`done`). */

import assert from "node:assert/strict";
import { KnpError } from "@knp/core/errors";
import { dialRequest } from "@knp/proto";
import { GrpcChannel } from "./grpc_channel.ts";
import { serveGrpc } from "./grpc_server.ts";
import type { GrpcPacketStream } from "./grpc_stream.ts";
import { grpcKeepaliveOptions } from "./grpc_internal.ts";

/**
 * A server whose streams fail with PROTOCOL at their first packet, or (with `mode: clean`
 * metadata) end cleanly as soon as they open.
 */
async function strictServer() {
  const ends: (Error | undefined)[] = [];
  let arrived: (stream: GrpcPacketStream) => void = () => {};
  const server = await serveGrpc({
    service: "agent",
    address: "127.0.0.1:0",
    onStream({ stream, metadata }) {
      stream.start({
        onPacket: () => stream.close(new KnpError("PROTOCOL", "no packets here")),
        onEnd: (error) => ends.push(error),
      });
      arrived(stream);
      if (metadata("mode")[0] === "clean") stream.close();
    },
  });
  const next = () => new Promise<GrpcPacketStream>((resolve) => (arrived = resolve));
  return { server, next, ends };
}

Deno.test("gRPC stream done: an error on both sides, undefined for a clean end", async () => {
  const { server, next, ends } = await strictServer();
  const channel = new GrpcChannel({ target: `127.0.0.1:${server.port}` });
  try {
    const incoming = next();
    const { stream } = await channel.openStream("agent", {});
    stream.start({ onPacket() {}, onEnd() {} });
    stream.send(dialRequest("10.0.0.1:80", 1n));
    const serverStream = await incoming;
    const serverError = await serverStream.done;
    assert.ok(serverError instanceof KnpError);
    assert.match(serverError.message, /INVALID_ARGUMENT: no packets here/);
    assert.deepEqual(ends, [serverError], "done settles with what onEnd got");
    const clientError = await stream.done;
    assert.ok(clientError instanceof KnpError);
    assert.equal(clientError.code, "TUNNEL_CLOSED");
    assert.match(clientError.message, /INVALID_ARGUMENT: no packets here/);

    const incoming2 = next();
    const { stream: clean } = await channel.openStream("agent", { mode: "clean" });
    clean.start({ onPacket() {}, onEnd() {} });
    const serverClean = await incoming2;
    assert.equal(await serverClean.done, undefined);
    assert.equal(await clean.done, undefined);
    assert.deepEqual(ends, [serverError, undefined]);
  } finally {
    channel.close();
    await server.close();
  }
});

Deno.test("gRPC keepalive options map onto grpc-js keepalive time and timeout", () => {
  assert.deepEqual(grpcKeepaliveOptions({ intervalMs: 30_000, timeoutMs: 5_000 }), {
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.keepalive_permit_without_calls": 1,
  });
});
