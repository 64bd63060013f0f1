import assert from "node:assert/strict";
import {
  closeDial,
  closeRequest,
  closeResponse,
  dataPacket,
  dialRequest,
  dialResponse,
  drain,
  type Packet,
} from "@knp/proto";
import { KnpError } from "@knp/core/errors";
import { CLOSE_FLUSH_MS } from "./endpoint_conn.ts";
import { type DialCall, FakeEndpoint } from "./_test_socket.ts";
import { decode, harness, KiB, settle, text } from "./_test_harness.ts";

const UNKNOWN = { type: "UNKNOWN", typeNumber: 99 } as unknown as Packet;

Deno.test("AgentClient dials on DIAL_REQ and answers with connectIDs 1, 2, 3 per stream", async () => {
  const h = harness({ writeMode: "instant" });
  h.server.end.send(dialRequest("10.0.0.1:80", 100n));
  h.server.end.send(dialRequest("10.0.0.2:443", 200n));
  h.server.end.send(dialRequest("10.0.0.3:22", 300n));
  await settle();
  assert.deepEqual(h.server.packets, [
    dialResponse(100n, 1n),
    dialResponse(200n, 2n),
    dialResponse(300n, 3n),
  ]);
  assert.deepEqual(
    h.calls.map((c) => [c.protocol, c.address, c.timeoutMs]),
    [["tcp", "10.0.0.1:80", 5000], ["tcp", "10.0.0.2:443", 5000], ["tcp", "10.0.0.3:22", 5000]],
  );
  assert.equal(h.client.connections, 3);
  assert.equal(h.client.pendingDials, 0);

  // Another stream numbers its connections on its own.
  const other = harness({ writeMode: "instant" });
  assert.equal(await other.dial(100n), 1n);
  await other.close();
  await h.close();
});

Deno.test("AgentClient passes a dial error's text through in DIAL_RSP", async () => {
  const refused = "dial tcp 127.0.0.1:1: connect: connection refused";
  const h = harness({ writeMode: () => new KnpError("DIAL_FAILED", refused) });
  h.server.end.send(dialRequest("127.0.0.1:1", 5n));
  await settle();
  assert.deepEqual(h.server.packets, [dialResponse(5n, 0n, refused)]);
  assert.equal(h.client.connections, 0);
  assert.equal(h.client.pendingDials, 0);
  await h.close();
});

Deno.test("AgentClient words a raw connection error like Go's net package", async () => {
  const h = harness({ writeMode: () => new Deno.errors.ConnectionRefused("os error 111") });
  h.server.end.send(dialRequest("127.0.0.1:1", 6n));
  await settle();
  assert.deepEqual(h.server.packets, [
    dialResponse(6n, 0n, "dial tcp 127.0.0.1:1: connect: connection refused"),
  ]);
  await h.close();
});

Deno.test("AgentClient tells a knp server the dial error's kind in the knp tag", async () => {
  const h = harness({
    writeMode: () => new Deno.errors.ConnectionRefused("os error 111"),
    flow: { sendWindow: 64 * KiB, recvWindow: 64 * KiB },
  });
  h.server.end.send(dialRequest("127.0.0.1:1", 6n));
  await settle();
  // Upstream's text, then the kind the agent classified from the Deno error's type.
  assert.deepEqual(h.server.packets, [
    dialResponse(
      6n,
      0n,
      "dial tcp 127.0.0.1:1: connect: connection refused [knp: kind=dial-refused]",
    ),
  ]);
  await h.close();
});

Deno.test("AgentClient sends an unclassifiable dial error untagged even to a knp server", async () => {
  const odd = "dial tcp 10.0.0.1:80: something odd";
  const h = harness({
    writeMode: () => new KnpError("DIAL_FAILED", odd),
    flow: { sendWindow: 64 * KiB, recvWindow: 64 * KiB },
  });
  h.server.end.send(dialRequest("10.0.0.1:80", 8n));
  await settle();
  assert.deepEqual(h.server.packets, [dialResponse(8n, 0n, odd)]);
  await h.close();
});

Deno.test("AgentClient refuses a second DIAL_REQ with a dial ID that is still dialing", async () => {
  const h = harness();
  h.server.end.send(dialRequest("10.0.0.1:80", 7n));
  h.server.end.send(dialRequest("10.0.0.1:80", 7n));
  await settle();
  assert.equal(h.calls.length, 1);
  assert.deepEqual(h.server.packets, [dialResponse(7n, 0n, "dial ID 7 is already being dialed")]);
  h.calls[0]!.resolve(new FakeEndpoint());
  await settle();
  assert.deepEqual(h.server.packets.at(-1), dialResponse(7n, 1n));
  await h.close();
});

Deno.test("AgentClient answers DATA for an unknown connectID with CLOSE_RSP unrecognized connectID", async () => {
  const h = harness();
  h.server.end.send(dataPacket(9n, text("?")));
  h.server.end.send(dataPacket(0n, text("ignored")));
  await settle();
  assert.deepEqual(h.server.packets, [closeResponse(9n, "unrecognized connectID")]);
  await h.close();
});

Deno.test("AgentClient answers CLOSE_REQ for an unknown connectID with CLOSE_RSP Unknown connectID", async () => {
  const h = harness();
  h.server.end.send(closeRequest(9n));
  await settle();
  assert.deepEqual(h.server.packets, [closeResponse(9n, "Unknown connectID")]);
  await h.close();
});

Deno.test("AgentClient relays DATA both ways between the server and the endpoint", async () => {
  const h = harness({ writeMode: "instant" });
  const id = await h.dial(1n);
  const socket = h.sockets[0]!;
  h.server.end.send(dataPacket(id, text("GET / HTTP/1.1\r\n")));
  h.server.end.send(dataPacket(id, text("\r\n")));
  await settle();
  assert.equal(decode(socket.written), "GET / HTTP/1.1\r\n\r\n");
  socket.push(text("HTTP/1.1 200 OK\r\n"));
  await settle();
  assert.deepEqual(h.server.packets.at(-1), dataPacket(id, text("HTTP/1.1 200 OK\r\n")));
  await h.close();
});

Deno.test("AgentClient finishes partial endpoint writes before the next chunk", async () => {
  const h = harness({ writeMode: () => new FakeEndpoint({ maxWrite: 3 }) });
  const id = await h.dial(1n);
  h.server.end.send(dataPacket(id, text("abcdefgh")));
  h.server.end.send(dataPacket(id, text("ij")));
  await settle();
  const socket = h.sockets[0]!;
  assert.equal(decode(socket.written), "abcdefghij");
  assert.deepEqual(socket.log, ["write:3", "write:3", "write:2", "write:2"]);
  await h.close();
});

Deno.test("AgentClient flushes queued writes to the endpoint before CLOSE_RSP on CLOSE_REQ", async () => {
  const h = harness({ writeMode: "gated" });
  const id = await h.dial(1n);
  const socket = h.sockets[0]!;
  h.server.end.send(dataPacket(id, text("one,")));
  h.server.end.send(dataPacket(id, text("two,")));
  h.server.end.send(dataPacket(id, text("three")));
  h.server.end.send(closeRequest(id));
  await settle();
  assert.equal(socket.closed, false, "the socket stays open while writes are queued");
  assert.equal(h.server.of("CLOSE_RSP").length, 0);

  socket.releaseWrites("instant");
  await settle();
  assert.equal(decode(socket.written), "one,two,three");
  assert.deepEqual(socket.log, ["write:4", "write:4", "write:5", "close"]);
  assert.deepEqual(h.server.packets.at(-1), closeResponse(id, ""));
  assert.equal(h.client.connections, 0);
  await h.close();
});

Deno.test("AgentClient closes after CLOSE_FLUSH_MS when queued writes do not drain", async () => {
  const h = harness({ writeMode: "stalled" });
  const id = await h.dial(1n);
  const socket = h.sockets[0]!;
  h.server.end.send(dataPacket(id, text("stuck")));
  h.server.end.send(closeRequest(id));
  await settle();
  h.clock.tick(CLOSE_FLUSH_MS - 1);
  await settle();
  assert.equal(socket.closed, false);
  h.clock.tick(1);
  await settle();
  assert.equal(socket.closed, true);
  assert.deepEqual(h.server.packets.at(-1), closeResponse(id, ""));
  assert.equal(h.client.connections, 0);
  await h.close();
});

Deno.test("AgentClient sends every DATA before CLOSE_RSP when the endpoint reaches EOF", async () => {
  const h = harness({ writeMode: "instant" });
  const id = await h.dial(1n);
  const socket = h.sockets[0]!;
  h.server.clear();
  socket.push(text("a"));
  socket.push(text("b"));
  socket.push(text("c"));
  socket.end();
  await settle();
  assert.deepEqual(h.server.packets, [
    dataPacket(id, text("a")),
    dataPacket(id, text("b")),
    dataPacket(id, text("c")),
    closeResponse(id, ""),
  ]);
  assert.equal(socket.closed, true);
  assert.equal(h.client.connections, 0);
  await h.close();
});

Deno.test("AgentClient sends CLOSE_RSP when reading the endpoint fails", async () => {
  const h = harness({ writeMode: "instant" });
  const id = await h.dial(1n);
  const socket = h.sockets[0]!;
  socket.fail(new Deno.errors.ConnectionReset("connection reset by peer"));
  await settle();
  assert.deepEqual(h.server.packets.at(-1), closeResponse(id, ""));
  assert.equal(socket.closed, true);
  assert.equal(h.client.connections, 0);
  await h.close();
});

Deno.test("AgentClient closes a socket that arrives after DIAL_CLS and sends no DIAL_RSP", async () => {
  const h = harness();
  h.server.end.send(dialRequest("10.0.0.1:80", 8n));
  await settle();
  const call = h.calls[0]!;
  assert.equal(call.signal?.aborted, false);
  h.server.end.send(closeDial(8n));
  await settle();
  assert.equal(call.signal?.aborted, true, "the dial is cancelled");
  const late = new FakeEndpoint();
  call.resolve(late);
  await settle();
  assert.equal(late.closed, true);
  assert.equal(h.server.packets.length, 0);
  assert.equal(h.client.connections, 0);
  assert.equal(h.client.pendingDials, 0);
  await h.close();
});

Deno.test("AgentClient sends no DIAL_RSP when a cancelled dial fails", async () => {
  const h = harness();
  h.server.end.send(dialRequest("10.0.0.1:80", 8n));
  await settle();
  h.server.end.send(closeDial(8n));
  await settle();
  h.calls[0]!.reject(new KnpError("DIAL_FAILED", "dial tcp 10.0.0.1:80: operation was canceled"));
  await settle();
  assert.equal(h.server.packets.length, 0);
  assert.equal(h.client.pendingDials, 0);
  await h.close();
});

Deno.test("AgentClient closes every endpoint socket and cancels dials when the stream ends", async () => {
  const h = harness();
  h.server.end.send(dialRequest("10.0.0.1:80", 1n));
  h.server.end.send(dialRequest("10.0.0.2:80", 2n));
  h.server.end.send(dialRequest("10.0.0.3:80", 3n));
  await settle();
  const [c1, c2, c3] = h.calls as [DialCall, DialCall, DialCall];
  const s1 = new FakeEndpoint(), s2 = new FakeEndpoint({ writeMode: "stalled" });
  c1.resolve(s1);
  c2.resolve(s2);
  await settle();
  h.server.end.send(dataPacket(2n, text("pending write")));
  await settle();
  assert.equal(h.client.connections, 2);
  h.server.clear();

  h.server.end.close(new Error("server went away"));
  await settle();
  assert.equal(s1.closed, true);
  assert.equal(s2.closed, true);
  assert.equal(c3.signal?.aborted, true);
  const late = new FakeEndpoint();
  c3.resolve(late);
  await settle();
  assert.equal(late.closed, true);
  assert.equal(h.client.connections, 0);
  assert.equal(h.client.pendingDials, 0);
  assert.equal((await h.client.done)?.message, "server went away");
  assert.equal(h.server.packets.length, 0);
});

Deno.test("AgentClient keeps delivering to other connections while one endpoint stops reading", async () => {
  const h = harness({
    writeMode: (address) =>
      new FakeEndpoint({ writeMode: address.startsWith("stalled") ? "stalled" : "instant" }),
    guard: { stallMs: 100, maxBytes: 64 * KiB },
  });
  const stalled = await h.dial(1n, "stalled:80");
  const healthy = await h.dial(2n, "healthy:80");
  const [stalledSocket, healthySocket] = h.sockets as [FakeEndpoint, FakeEndpoint];
  h.server.clear();

  const rounds = 20;
  for (let i = 0; i < rounds; i++) {
    h.server.end.send(dataPacket(stalled, new Uint8Array(8 * KiB)));
    h.server.end.send(dataPacket(healthy, new Uint8Array([i])));
  }
  await settle();
  assert.deepEqual(
    [...healthySocket.written],
    Array.from({ length: rounds }, (_, i) => i),
    "every chunk reached the healthy endpoint, in order",
  );
  const closes = h.server.of("CLOSE_RSP").filter((p) => p.closeResponse.connectId === stalled);
  assert.ok(closes.length >= 1);
  assert.equal(
    closes[0]!.closeResponse.error,
    "endpoint stopped reading; connection reset by the agent",
  );
  assert.ok(closes.slice(1).every((p) => p.closeResponse.error === "unrecognized connectID"));
  assert.equal(stalledSocket.closed, true);
  assert.equal(healthySocket.closed, false);
  assert.equal(h.client.connections, 1);
  assert.equal(
    h.server.of("CLOSE_RSP").filter((p) => p.closeResponse.connectId === healthy).length,
    0,
  );
  await h.close();
});

Deno.test("AgentClient holds the stream for at most stallMs for an endpoint that stops reading", async () => {
  const h = harness({
    writeMode: (address) =>
      new FakeEndpoint({ writeMode: address.startsWith("stalled") ? "stalled" : "instant" }),
    guard: { stallMs: 100, maxBytes: 16 << 20 },
  });
  const stalled = await h.dial(1n, "stalled:80");
  const healthy = await h.dial(2n, "healthy:80");
  const [stalledSocket, healthySocket] = h.sockets as [FakeEndpoint, FakeEndpoint];
  // 1.25 MiB queued for a connection whose mark is 1 MiB: it holds the shared stream.
  for (let i = 0; i < 5; i++) {
    h.server.end.send(dataPacket(stalled, new Uint8Array(256 * KiB)));
  }
  h.server.end.send(dataPacket(healthy, text("late")));
  await settle();
  assert.equal(healthySocket.writes.length, 0, "held while the stalled endpoint may still drain");
  h.clock.tick(99);
  await settle();
  assert.equal(healthySocket.writes.length, 0);
  h.clock.tick(1);
  await settle();
  assert.equal(decode(healthySocket.written), "late");
  assert.equal(stalledSocket.closed, false, "still under maxBytes: not reset");
  await h.close();
  assert.equal(stalledSocket.closed, true);
});

Deno.test("AgentClient drain sends DRAIN on its stream", async () => {
  const h = harness();
  h.client.drain();
  await settle();
  assert.deepEqual(h.server.packets, [drain()]);
  await h.close();
});

Deno.test("AgentClient ignores UNKNOWN, DRAIN and DIAL_CLS for an unknown dial", async () => {
  const h = harness({ writeMode: "instant" });
  h.server.end.send(UNKNOWN);
  h.server.end.send(drain());
  h.server.end.send(closeDial(12345n));
  await settle();
  assert.equal(h.server.packets.length, 0);
  assert.equal(h.server.ends.length, 0);
  assert.equal(await h.dial(1n), 1n, "the stream keeps working");
  await h.close();
});

Deno.test("AgentClient close ends the stream and every connection without CLOSE_RSP", async () => {
  const h = harness({ writeMode: "instant" });
  await h.dial(1n);
  h.server.clear();
  h.client.close();
  await settle();
  assert.equal(h.sockets[0]!.closed, true);
  assert.equal(h.server.ends.length, 1);
  assert.equal(h.server.packets.length, 0);
  assert.equal(await h.client.done, undefined);
});
