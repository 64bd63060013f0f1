import assert from "node:assert/strict";
import FakeTimers from "@sinonjs/fake-timers";
import { closeDial, closeRequest, closeResponse, dataPacket, dialResponse } from "@knp/proto";
import { DialError, KnpError } from "@knp/core/errors";
import { memoryPipe } from "@knp/transport/packet_stream";
import {
  CLOSE_TIMEOUT_MS,
  DIAL_BACKSTOP_MS,
  type DialOptions,
  MAX_WRITE_CHUNK,
  TunnelConn,
} from "./tunnel_conn.ts";
import { startPeer } from "@knp/testing/fakes";
import { randomDialId } from "@knp/proto";

// TunnelConn uses the global timers, so the tests replace them with a fake clock; settling the
// pipes needs a real macrotask, so keep the real setTimeout.
const realSetTimeout = globalThis.setTimeout;
/** Lets every queued microtask (and the pipes' pumps) run. */
const settle = () => new Promise<void>((resolve) => realSetTimeout(resolve, 0));

const text = (s: string) => new TextEncoder().encode(s);
const decode = (b: Uint8Array) => new TextDecoder().decode(b);

/** Runs `fn` with setTimeout/clearTimeout faked; always uninstalls the clock. */
function withClock(fn: (clock: FakeTimers.Clock) => Promise<void>): () => Promise<void> {
  return async () => {
    const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
    try {
      await fn(clock);
    } finally {
      clock.uninstall();
    }
  };
}

/** A TunnelConn over a memory pipe, dialing; the test plays the server. */
async function dialing(options: DialOptions = {}, highWater?: number) {
  const [clientEnd, serverEnd] = memoryPipe({ highWater });
  const server = startPeer(serverEnd);
  let finished = 0;
  const conn = new TunnelConn(clientEnd, "10.0.0.1:80", options, () => finished++);
  const dial = conn.dial("tcp", options);
  const outcome = dial.then(() => undefined, (err: unknown) => err);
  await settle();
  return { conn, server, clientEnd, dial, outcome, finished: () => finished };
}

/** A TunnelConn whose dial succeeded with `connectId`. */
async function open(connectId = 5n, options: DialOptions = {}, highWater?: number) {
  const d = await dialing(options, highWater);
  d.server.end.send(dialResponse(d.conn.dialId, connectId));
  await d.dial;
  return d;
}

function assertDialError(err: unknown, reason: DialError["reason"], message: string | RegExp) {
  assert.ok(err instanceof DialError, `expected a DialError, got ${err}`);
  assert.equal(err.reason, reason);
  assert.equal(err.code, "DIAL_FAILED");
  if (typeof message === "string") assert.equal(err.message, message);
  else assert.match(err.message, message);
}

Deno.test(
  "TunnelConn dial sends DIAL_REQ and yields the agent's connectId on success",
  withClock(async () => {
    const d = await dialing();
    assert.equal(d.server.packets.length, 1);
    const req = d.server.packets[0]!;
    assert.equal(req.type, "DIAL_REQ");
    if (req.type !== "DIAL_REQ") return;
    assert.deepEqual(req.dialRequest, {
      protocol: "tcp",
      address: "10.0.0.1:80",
      random: d.conn.dialId,
    });
    assert.equal(d.conn.connectId, 0n);
    d.server.end.send(dialResponse(d.conn.dialId, 5n));
    assert.equal(await d.outcome, undefined);
    assert.equal(d.conn.connectId, 5n);
    assert.equal(d.conn.address, "10.0.0.1:80");
    d.server.end.close();
    await d.conn.closed;
  }),
);

Deno.test(
  "TunnelConn dial fails with reason endpoint and the agent's text on a DIAL_RSP error",
  withClock(async () => {
    const d = await dialing();
    const refused = "dial tcp 10.0.0.1:80: connect: connection refused";
    d.server.end.send(dialResponse(d.conn.dialId, 0n, refused));
    assertDialError(await d.outcome, "endpoint", refused);
    await d.conn.closed;
    await settle();
    assert.equal(d.server.ends.length, 1, "the tunnel closes");
    assert.equal(d.finished(), 1);
    assert.equal(d.server.of("DIAL_CLS").length, 0);
  }),
);

Deno.test(
  "TunnelConn dial fails with reason dialclosed on DIAL_CLS",
  withClock(async () => {
    const d = await dialing();
    d.server.end.send(closeDial(d.conn.dialId));
    assertDialError(await d.outcome, "dialclosed", "dial closed");
    await d.conn.closed;
  }),
);

Deno.test(
  "TunnelConn dial sends DIAL_CLS and fails with reason context when the signal aborts",
  withClock(async () => {
    const abort = new AbortController();
    const d = await dialing({ signal: abort.signal });
    abort.abort(new Error("request cancelled"));
    const err = await d.outcome;
    assertDialError(err, "context", /context/);
    assert.equal((err as DialError).cause instanceof Error, true);
    await settle();
    assert.deepEqual(d.server.packets.at(-1), closeDial(d.conn.dialId));
    assert.equal(d.server.ends.length, 1);
  }),
);

Deno.test(
  "TunnelConn dial fails with reason context at once for an already aborted signal",
  withClock(async () => {
    const d = await dialing({ signal: AbortSignal.abort() });
    assertDialError(await d.outcome, "context", /context/);
    assert.equal(d.server.of("DIAL_REQ").length, 0, "no dial is started");
  }),
);

Deno.test(
  "TunnelConn dial fails with reason timeout after timeoutMs and sends DIAL_CLS",
  withClock(async (clock) => {
    const d = await dialing({ timeoutMs: 2_000 });
    clock.tick(1_999);
    await settle();
    assert.equal(d.server.of("DIAL_CLS").length, 0);
    clock.tick(1);
    assertDialError(await d.outcome, "timeout", "dial timeout, backstop");
    await settle();
    assert.deepEqual(d.server.packets.at(-1), closeDial(d.conn.dialId));
    assert.equal(d.server.ends.length, 1);
  }),
);

Deno.test(
  "TunnelConn dial times out after the 30 s backstop by default",
  withClock(async (clock) => {
    assert.equal(DIAL_BACKSTOP_MS, 30_000);
    const d = await dialing();
    clock.tick(DIAL_BACKSTOP_MS);
    assertDialError(await d.outcome, "timeout", "dial timeout, backstop");
  }),
);

Deno.test(
  "TunnelConn dial fails with reason tunnelclosed when the stream ends during the dial",
  withClock(async (clock) => {
    const d = await dialing();
    d.server.end.close(new Error("GOAWAY"));
    assertDialError(await d.outcome, "tunnelclosed", "tunnel closed: GOAWAY");
    assert.equal(clock.countTimers(), 0, "the dial timer is cleared");
  }),
);

Deno.test(
  "TunnelConn close during the dial cancels it with DIAL_CLS",
  withClock(async () => {
    const d = await dialing();
    d.conn.close();
    assertDialError(await d.outcome, "context", "dial cancelled by close");
    await settle();
    assert.deepEqual(d.server.packets.at(-1), closeDial(d.conn.dialId));
  }),
);

Deno.test(
  "TunnelConn closes the tunnel on a DIAL_RSP for another dial ID",
  withClock(async () => {
    const d = await dialing();
    d.server.end.send(dialResponse(d.conn.dialId + 1n, 3n));
    const err = await d.outcome;
    assert.ok(err instanceof KnpError);
    assert.equal(err.code, "PROTOCOL");
    await settle();
    assert.equal(d.server.ends.length, 1);
  }),
);

Deno.test(
  "TunnelConn readable delivers DATA in order and ends on CLOSE_RSP",
  withClock(async () => {
    const d = await open(5n);
    d.server.end.send(dataPacket(5n, text("hello, ")));
    d.server.end.send(dataPacket(5n, text("world")));
    d.server.end.send(dataPacket(0n, text("ignored")));
    d.server.end.send(closeResponse(5n));
    const chunks: string[] = [];
    for await (const chunk of d.conn.readable) chunks.push(decode(chunk));
    assert.deepEqual(chunks, ["hello, ", "world"]);
    await d.conn.closed;
    assert.equal(d.conn.closeError, "");
    await settle();
    assert.equal(d.server.ends.length, 1, "the single-use tunnel closes");
  }),
);

Deno.test(
  "TunnelConn keeps the CLOSE_RSP error text",
  withClock(async () => {
    const d = await open(5n);
    d.server.end.send(closeResponse(5n, "agent agent-1 disconnected"));
    await d.conn.closed;
    assert.equal(d.conn.closeError, "agent agent-1 disconnected");
  }),
);

Deno.test(
  "TunnelConn readable errors on a CLOSE_RSP with an error (agent gone mid-transfer)",
  withClock(async () => {
    const d = await open(5n);
    d.server.end.send(dataPacket(5n, text("partial")));
    d.server.end.send(closeResponse(5n, "agent agent-1 disconnected"));
    const reader = d.conn.readable.getReader();
    assert.equal(decode((await reader.read()).value!), "partial", "bytes before the cut arrive");
    await assert.rejects(reader.read(), (err: unknown) => {
      assert.ok(err instanceof KnpError, String(err));
      assert.equal(err.code, "TUNNEL_CLOSED");
      assert.match(err.message, /agent agent-1 disconnected/);
      return true;
    });
    await d.conn.closed;
  }),
);

Deno.test(
  "TunnelConn readable ends cleanly on an error CLOSE_RSP after its own close()",
  withClock(async (clock) => {
    const d = await open(5n);
    d.conn.close();
    d.server.end.send(closeResponse(5n, "timed out waiting for the agent to close"));
    const reader = d.conn.readable.getReader();
    assert.equal((await reader.read()).done, true);
    await d.conn.closed;
    clock.runAll();
  }),
);

Deno.test(
  "TunnelConn readable errors when the tunnel ends before the connection closed",
  withClock(async () => {
    const d = await open(5n);
    d.server.end.send(dataPacket(5n, text("partial")));
    d.server.end.close(new Error("stream reset"));
    const reader = d.conn.readable.getReader();
    assert.equal(decode((await reader.read()).value!), "partial");
    await assert.rejects(reader.read(), (err: unknown) => {
      assert.ok(err instanceof KnpError);
      assert.equal(err.code, "TUNNEL_CLOSED");
      assert.match(err.message, /stream reset/);
      return true;
    });
    await d.conn.closed;
  }),
);

Deno.test(
  "TunnelConn pauses the stream while readable is full and resumes when read",
  withClock(async () => {
    const d = await open(5n, { readHighWater: 8 });
    for (let i = 0; i < 4; i++) d.server.end.send(dataPacket(5n, new Uint8Array(8).fill(i)));
    await settle();
    assert.ok(d.server.end.bufferedBytes >= 16, "the client stopped taking packets");
    const reader = d.conn.readable.getReader();
    const got: number[] = [];
    for (let i = 0; i < 4; i++) got.push((await reader.read()).value![0]!);
    assert.deepEqual(got, [0, 1, 2, 3]);
    await settle();
    assert.equal(d.server.end.bufferedBytes, 0);
    reader.releaseLock();
    d.server.end.close();
    await d.conn.closed;
  }),
);

Deno.test(
  "TunnelConn writable splits a 200 KiB write into DATA packets of at most 64 KiB",
  withClock(async () => {
    const d = await open(5n);
    const payload = new Uint8Array(200 * 1024);
    for (let i = 0; i < payload.length; i++) payload[i] = i % 251;
    const writer = d.conn.writable.getWriter();
    await writer.write(payload);
    await settle();
    const data = d.server.of("DATA");
    assert.equal(MAX_WRITE_CHUNK, 64 * 1024);
    assert.deepEqual(data.map((p) => p.data.data.byteLength), [65536, 65536, 65536, 8192]);
    assert.ok(data.every((p) => p.data.connectId === 5n));
    const joined = new Uint8Array(payload.length);
    let off = 0;
    for (const p of data) {
      joined.set(p.data.data, off);
      off += p.data.data.byteLength;
    }
    assert.deepEqual(joined, payload);
    writer.releaseLock();
    d.server.end.close();
    await d.conn.closed;
  }),
);

Deno.test(
  "TunnelConn writable waits for the stream to drain",
  withClock(async () => {
    const d = await open(5n, {}, 64 * 1024);
    d.server.end.pause();
    const writer = d.conn.writable.getWriter();
    let written = false;
    const write = writer.write(new Uint8Array(200 * 1024)).then(() => written = true);
    await settle();
    assert.equal(written, false, "the write waits while the peer does not read");
    d.server.end.resume();
    await write;
    assert.equal(d.server.of("DATA").length, 4);
    writer.releaseLock();
    d.server.end.close();
    await d.conn.closed;
  }),
);

Deno.test(
  "TunnelConn writable rejects writes after the connection closed",
  withClock(async () => {
    const d = await open(5n);
    d.server.end.send(closeResponse(5n));
    await d.conn.closed;
    const writer = d.conn.writable.getWriter();
    await assert.rejects(writer.write(text("late")), { name: "KnpError" });
  }),
);

Deno.test(
  "TunnelConn close sends CLOSE_REQ and resolves closed on CLOSE_RSP",
  withClock(async (clock) => {
    const d = await open(5n);
    let closed = false;
    d.conn.closed.then(() => closed = true);
    d.conn.close();
    d.conn.close(); // idempotent
    await settle();
    assert.deepEqual(d.server.of("CLOSE_REQ"), [closeRequest(5n)]);
    assert.equal(closed, false, "waits for the agent's answer");
    d.server.end.send(closeResponse(5n));
    await d.conn.closed;
    assert.equal(clock.countTimers(), 0, "the close timer is cleared");
    await settle();
    assert.equal(d.server.ends.length, 1);
  }),
);

Deno.test(
  "TunnelConn close resolves closed after closeTimeoutMs without a CLOSE_RSP",
  withClock(async (clock) => {
    const d = await open(5n, { closeTimeoutMs: 500 });
    let closed = false;
    d.conn.closed.then(() => closed = true);
    d.conn.close();
    clock.tick(499);
    await settle();
    assert.equal(closed, false);
    clock.tick(1);
    await settle();
    assert.equal(closed, true);
    assert.equal(d.server.ends.length, 1, "the tunnel is closed");
    assert.equal(d.finished(), 1);
  }),
);

Deno.test(
  "TunnelConn close waits CLOSE_TIMEOUT_MS by default and works with await using",
  withClock(async (clock) => {
    const d = await open(5n);
    let disposed = false;
    const dispose = d.conn[Symbol.asyncDispose]().then(() => disposed = true);
    clock.tick(CLOSE_TIMEOUT_MS - 1);
    await settle();
    assert.equal(disposed, false);
    clock.tick(1);
    await dispose;
    assert.equal(disposed, true);
  }),
);

Deno.test(
  "TunnelConn answers DATA for another connectID with CLOSE_REQ for that ID",
  withClock(async () => {
    const d = await open(5n);
    d.server.end.send(dataPacket(9n, text("stray")));
    await settle();
    assert.deepEqual(d.server.of("CLOSE_REQ"), [closeRequest(9n)]);
    assert.equal(d.server.ends.length, 0, "the connection stays up");
    d.server.end.send(dataPacket(5n, text("mine")));
    d.server.end.send(closeResponse(9n)); // for an unknown connection: ignored
    await settle();
    const reader = d.conn.readable.getReader();
    assert.equal(decode((await reader.read()).value!), "mine");
    reader.releaseLock();
    d.server.end.close();
    await d.conn.closed;
  }),
);

Deno.test("randomDialId returns positive int63 bigints, often above 2^53", () => {
  let above = 0;
  for (let i = 0; i < 1000; i++) {
    const id = randomDialId();
    assert.equal(typeof id, "bigint");
    assert.ok(id > 0n && id < 1n << 63n, String(id));
    if (id > BigInt(Number.MAX_SAFE_INTEGER)) above++;
  }
  assert.ok(above > 900, `only ${above} of 1000 above 2^53`);
});

Deno.test(
  "TunnelConn dial IDs survive the trip as exact bigints",
  withClock(async () => {
    const d = await dialing();
    const req = d.server.of("DIAL_REQ")[0]!;
    assert.equal(req.dialRequest.random, d.conn.dialId);
    assert.equal(typeof d.conn.dialId, "bigint");
    assert.ok(d.conn.dialId > 0n);
    d.server.end.send(dialResponse(d.conn.dialId, 1n << 40n));
    await d.dial;
    assert.equal(d.conn.connectId, 1n << 40n);
    d.server.end.close();
    await d.conn.closed;
  }),
);
