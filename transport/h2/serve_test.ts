/**
 * The native HTTP/2 server against grpc-js clients (a peer nobody here wrote): the agent
 * service's Connect stream (metadata, response headers, packets both ways, clean end), the
 * Proxy stream with a bulk transfer through flow control, error statuses and trailers, the
 * message size limit, an unknown method, a Unix socket, mTLS, and graceful shutdown (GOAWAY).
 *
 * @module
 */

import assert from "node:assert/strict";
import { KnpError } from "@knp/core/errors";
import { closeRequest, dataPacket, dialRequest, dialResponse } from "@knp/proto";
import { generateCa } from "@knp/testing";
import { GrpcChannel } from "../grpc_channel.ts";
import { type H2IncomingStream, serveH2Grpc } from "./serve.ts";
import { agentService, collector, connectExchange, withServer } from "./_test_streams.ts";

/** An echo server: every packet comes back; the first DIAL_REQ gets a DIAL_RSP. */
function echo(incoming: H2IncomingStream): void {
  const { stream } = incoming;
  stream.start({
    onPacket(p) {
      if (p.type === "DIAL_REQ") stream.send(dialResponse(p.dialRequest.random, 7n));
      else if (p.type === "CLOSE_REQ") stream.close();
      else if (p.type === "DATA") stream.send(dataPacket(p.data.connectId, p.data.data));
    },
    onEnd() {},
  });
}

Deno.test("h2 server: grpc-js Connect stream with metadata, headers and a clean end", async () => {
  const agent = agentService(echo);
  await withServer(serveH2Grpc, agent.options, async (target) => {
    const channel = new GrpcChannel({ target });
    try {
      const { stream, incoming } = await connectExchange(channel, agent.seen, "agentid");
      assert.match(incoming.metadata("user-agent")[0] ?? "", /grpc-node-js/);
      stream.close();
      assert.equal(await incoming.stream.done, undefined);
      assert.equal(await stream.done, undefined);
    } finally {
      channel.close();
    }
  });
});

Deno.test("h2 server: Proxy stream carries 13.5 MiB both ways, 8 and 64 KiB messages", async () => {
  await withServer(serveH2Grpc, { onStream: echo }, async (target) => {
    const channel = new GrpcChannel({ target });
    try {
      const { stream } = await channel.openStream("proxy", {});
      const got = collector(stream);
      stream.send(dialRequest("10.0.0.1:80", 42n));
      // Every packet differs: a read buffer reused too early would show as wrong bytes.
      // 8 KiB messages lie within one DATA frame, 64 KiB ones span several.
      const size = (k: number) => (k % 2 ? 64 : 8) * 1024;
      const chunk = (k: number) => new Uint8Array(size(k)).map((_, i) => (i + 7 * k) & 0xff);
      for (let k = 0; k < 384; k++) stream.send(dataPacket(7n, chunk(k)));
      const packets = await got.count(385);
      assert.equal(packets[0]!.type, "DIAL_RSP");
      let bytes = 0;
      for (const [k, p] of packets.slice(1).entries()) {
        assert.equal(p.type, "DATA");
        if (p.type === "DATA") {
          bytes += p.data.data.length;
          const bad = p.data.data.findIndex((b, i) => b !== ((i + 7 * k) & 0xff));
          assert.equal(bad, -1, `packet ${k}: byte ${bad} differs`);
        }
      }
      assert.equal(bytes, 192 * 72 * 1024);
      stream.send(closeRequest(7n));
      assert.equal(await stream.done, undefined);
    } finally {
      channel.close();
    }
  });
});

Deno.test("h2 server: errors reach grpc-js as statuses with their messages", async () => {
  await withServer(serveH2Grpc, {
    maxMessageBytes: 1024,
    onStream(incoming) {
      const mode = incoming.metadata("mode")[0];
      if (mode === "reject") incoming.reject(new KnpError("PERMISSION_DENIED", "nope: ünïcode"));
      else echo(incoming);
    },
  }, async (target) => {
    const channel = new GrpcChannel({ target });
    try {
      const { stream: rejected } = await channel.openStream("proxy", { mode: "reject" });
      rejected.start({ onPacket() {}, onEnd() {} });
      const denied = await rejected.done;
      assert.match(String(denied?.message), /PERMISSION_DENIED: nope: ünïcode/);

      const { stream: big } = await channel.openStream("proxy", {});
      big.start({ onPacket() {}, onEnd() {} });
      big.send(dataPacket(1n, new Uint8Array(4096)));
      assert.match(String((await big.done)?.message), /RESOURCE_EXHAUSTED/);

      const { stream: wrong } = await channel.openStream("agent", {});
      wrong.start({ onPacket() {}, onEnd() {} });
      assert.match(String((await wrong.done)?.message), /UNIMPLEMENTED/);
    } finally {
      channel.close();
    }
  });
});

Deno.test("h2 server: over a Unix socket, and a graceful close lets the open call finish", async () => {
  const dir = await Deno.makeTempDir();
  const address = `unix:${dir}/h2.sock`;
  const seen = Promise.withResolvers<H2IncomingStream>();
  const server = await serveH2Grpc({
    service: "proxy",
    address,
    onStream(incoming) {
      echo(incoming);
      seen.resolve(incoming);
    },
  });
  const channel = new GrpcChannel({ target: address });
  try {
    const { stream } = await channel.openStream("proxy", {});
    const got = collector(stream);
    stream.send(dialRequest("10.0.0.1:80", 1n));
    await got.count(1);
    await seen.promise;
    const closing = server.close(true);
    stream.send(dataPacket(7n, new Uint8Array([1, 2, 3])));
    await got.count(2);
    stream.send(closeRequest(7n));
    assert.equal(await stream.done, undefined);
    await closing;
  } finally {
    channel.close();
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("h2 server: mTLS with client certificates requested hands over the TLS facts", async () => {
  const ca = await generateCa({ commonName: "h2-test-ca" });
  const serverCert = await ca.issue({
    commonName: "localhost",
    dnsNames: ["localhost"],
    ipAddresses: ["127.0.0.1"],
    usage: "server",
  });
  const client = await ca.issue({ commonName: "system:konnectivity-agent", usage: "client" });
  const enc = new TextEncoder();
  const seen = Promise.withResolvers<H2IncomingStream>();
  await withServer(serveH2Grpc, {
    service: "agent",
    tls: {
      cert: enc.encode(serverCert.certPem),
      key: enc.encode(serverCert.keyPem),
      ca: enc.encode(ca.certPem),
    },
    clientCertificates: "requested",
    onStream(incoming) {
      echo(incoming);
      seen.resolve(incoming);
    },
  }, async (target) => {
    const channel = new GrpcChannel({
      target: target.replace("127.0.0.1", "localhost"),
      tls: {
        ca: enc.encode(ca.certPem),
        cert: enc.encode(client.certPem),
        key: enc.encode(client.keyPem),
      },
    });
    try {
      const { stream } = await channel.openStream("agent", {});
      const got = collector(stream);
      stream.send(dataPacket(3n, new Uint8Array([9])));
      await got.count(1);
      const incoming = await seen.promise;
      assert.equal(incoming.peerTls?.authorized, true);
      assert.ok((incoming.peerTls?.chain.length ?? 0) >= 1);
      stream.close();
      assert.equal(await stream.done, undefined);
    } finally {
      channel.close();
    }
  });
});
