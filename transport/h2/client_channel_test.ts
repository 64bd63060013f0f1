/**
 * The native HTTP/2 client (`H2GrpcChannel`) against real servers: our native server
 * (`serveH2Grpc`) and grpc-js's (`serveGrpc`). Each case also runs the grpc-js client
 * (`GrpcChannel`) where the errors are compared, so both clients report the same thing: a Connect
 * stream with metadata and response headers, statuses and retry hints from trailers, a large
 * transfer to a paused reader, and the message size limit.
 *
 * @module
 */

import assert from "node:assert/strict";
import { KnpError } from "@knp/core/errors";
import { closeRequest, dataPacket, dialRequest, dialResponse } from "@knp/proto";
import { GrpcChannel } from "../grpc_channel.ts";
import { serveGrpc } from "../grpc_server.ts";
import { type H2IncomingStream, serveH2Grpc, type ServeH2GrpcOptions } from "./serve.ts";
import { H2GrpcChannel } from "./client_channel.ts";
import { agentService, collector, connectExchange, type Serve } from "./_test_streams.ts";
import { withServer } from "./_test_streams.ts";

const SERVERS: [string, Serve][] = [
  ["native", serveH2Grpc],
  ["grpc-js", (o) => serveGrpc(o as Parameters<typeof serveGrpc>[0])],
];

/** Echoes DATA; answers DIAL_REQ; a DIAL_REQ to "fail:<code>" ends the call with that error. */
function echo(incoming: H2IncomingStream): void {
  const { stream } = incoming;
  stream.start({
    onPacket(p) {
      if (p.type === "DIAL_REQ") {
        const [verb, code] = p.dialRequest.address.split(":");
        if (verb !== "fail") stream.send(dialResponse(p.dialRequest.random, 7n));
        else {
          const error: KnpError & { retryAfterMs?: number } = new KnpError(
            code as "PERMISSION_DENIED",
            "nope, 100% refused",
          );
          error.retryAfterMs = 1500;
          stream.close(error);
        }
      } else if (p.type === "DATA") stream.send(dataPacket(p.data.connectId, p.data.data));
      else if (p.type === "CLOSE_REQ") stream.close();
    },
    onEnd() {},
  });
}

/** A `serve` server answering with `echo` unless `options` say otherwise, around `body`. */
function withEchoServer(
  serve: Serve,
  options: Partial<ServeH2GrpcOptions>,
  body: (target: string) => Promise<void>,
): Promise<void> {
  return withServer(serve, { onStream: echo, ...options }, body);
}

for (const [kind, serve] of SERVERS) {
  Deno.test(`h2 client → ${kind} server: Connect with metadata, headers, packets, clean end`, async () => {
    const agent = agentService(echo);
    await withServer(serve, agent.options, async (target) => {
      const channel = new H2GrpcChannel({ target });
      try {
        const { stream, incoming } = await connectExchange(channel, agent.seen, "agentID");
        assert.equal(channel.openStreams, 1);
        // The native server ends a call the client half-closed; grpc-js's adapter waits for us.
        if (kind === "native") stream.close();
        else stream.send(closeRequest(9n));
        assert.equal(await stream.done, undefined);
        assert.equal(await incoming.stream.done, undefined);
        assert.equal(channel.openStreams, 0);
      } finally {
        channel.close();
      }
    });
  });

  Deno.test(`h2 client → ${kind} server: statuses and retry hints as grpc-js reports them`, async () => {
    await withEchoServer(serve, {}, async (target) => {
      const native = new H2GrpcChannel({ target });
      const grpcJs = new GrpcChannel({ target });
      try {
        for (const code of ["PERMISSION_DENIED", "OVERLOADED", "PROTOCOL", "TIMEOUT"]) {
          const ends: (Error | undefined)[] = [];
          for (const channel of [native, grpcJs]) {
            const { stream } = await channel.openStream("proxy", {});
            collector(stream);
            stream.send(dialRequest(`fail:${code}`, 1n));
            ends.push(await stream.done);
          }
          const [mine, theirs] = ends as [KnpError & { retryAfterMs?: number }, typeof ends[0]];
          assert.ok(mine instanceof KnpError && theirs instanceof KnpError);
          assert.equal(mine.code, "TUNNEL_CLOSED");
          assert.equal(mine.message, theirs.message);
          assert.equal(mine.retryAfterMs, 1500);
          assert.equal(mine.retryAfterMs, (theirs as typeof mine).retryAfterMs);
        }
      } finally {
        native.close();
        grpcJs.close();
      }
    });
  });

  Deno.test(`h2 client → ${kind} server: 40 MiB to a paused reader, every byte once`, async () => {
    const sent = Promise.withResolvers<void>();
    const total = 40 * 1024 * 1024;
    const chunk = 60 * 1024;
    await withEchoServer(serve, {
      onStream({ stream }) {
        stream.start({
          onPacket() {
            let at = 0;
            let backpressured = false;
            for (let k = 0; at < total; k++) {
              const n = Math.min(chunk, total - at);
              const bytes = new Uint8Array(n).map((_, i) => (at + i) % 251);
              if (!stream.send(dataPacket(1n, bytes))) backpressured = true;
              at += n;
            }
            if (backpressured) sent.resolve();
            stream.close();
          },
          onEnd() {},
        });
      },
    }, async (target) => {
      const channel = new H2GrpcChannel({ target });
      try {
        const { stream } = await channel.openStream("proxy", {});
        let at = 0;
        let bad = -1;
        stream.start({
          onPacket(p) {
            if (p.type !== "DATA") return;
            const d = p.data.data;
            for (let i = 0; i < d.length; i++) if (d[i] !== (at + i) % 251 && bad < 0) bad = at + i;
            at += d.length;
          },
          onEnd() {},
        });
        stream.pause();
        stream.send(dialRequest("go", 1n));
        await sent.promise;
        assert.equal(at, 0);
        stream.resume();
        assert.equal(await stream.done, undefined);
        assert.equal(bad, -1);
        assert.equal(at, total);
      } finally {
        channel.close();
      }
    });
  });

  Deno.test(`h2 client → ${kind} server: a message above the limit ends the call`, async () => {
    await withEchoServer(serve, {}, async (target) => {
      const channel = new H2GrpcChannel({ target, maxMessageBytes: 4096 });
      try {
        const { stream } = await channel.openStream("proxy", {});
        const got = collector(stream);
        stream.send(dataPacket(1n, new Uint8Array(1000)));
        await got.count(1);
        stream.send(dataPacket(2n, new Uint8Array(8000)));
        const error = await stream.done;
        assert.ok(error instanceof KnpError);
        assert.equal(error.code, "TUNNEL_CLOSED");
        assert.match(error.message, /^RESOURCE_EXHAUSTED: received message larger than max/);
        assert.equal(got.packets.length, 1);
      } finally {
        channel.close();
      }
    });
  });
}

Deno.test("h2 client: connecting to nobody fails the call with UNAVAILABLE", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const channel = new H2GrpcChannel({ target: `127.0.0.1:${port}` });
  const failed = channel.openStream("agent", {}, { awaitHeaders: true });
  await assert.rejects(
    failed,
    (e: Error) => e instanceof KnpError && /^UNAVAILABLE/.test(e.message),
  );
  channel.close();
});
