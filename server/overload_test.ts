/**
 * Unit tests of overload protection: the connect-rate token bucket, the WARN throttle, the lazy
 * counter, the flags, and the per-frontend and per-agent dial limits in the core (in-memory
 * streams, fake clock).
 *
 * @module
 */

import assert from "node:assert/strict";
import { dialRequest, dialResponse } from "@knp/proto";
import { parseDialError } from "@knp/core/dial_errors";
import type { LogFields, Logger } from "@knp/core/log";
import { KnpError } from "@knp/core/errors";
import { memoryPipe } from "@knp/transport/packet_stream";
import { serveGrpc } from "@knp/transport/grpc_server";
import { GrpcChannel } from "@knp/transport/grpc_channel";
import { parseRetryAfter } from "@knp/transport/ws_handshake";
import { retryAfterOf } from "../agent/client_set.ts";
import { fakeTimers, startPeer } from "@knp/testing/fakes";
import { ConnectRateLimiter, DialLimits, LazyCounter, WarnThrottle } from "./overload.ts";
import { validateOverloadOptions } from "./overload_flags.ts";
import { parseServerOptions } from "./options.ts";
import { ProxyServer, type ProxyServerOptions, type ServerEvent } from "./proxy_server.ts";

const settle = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

/** A logger that keeps every record. */
function recordingLogger(): Logger & { lines: { level: string; msg: string; f: LogFields }[] } {
  const lines: { level: string; msg: string; f: LogFields }[] = [];
  const make = (base: LogFields): Logger => ({
    debug: (msg, f = {}) => void lines.push({ level: "debug", msg, f: { ...base, ...f } }),
    info: (msg, f = {}) => void lines.push({ level: "info", msg, f: { ...base, ...f } }),
    warn: (msg, f = {}) => void lines.push({ level: "warn", msg, f: { ...base, ...f } }),
    error: (msg, f = {}) => void lines.push({ level: "error", msg, f: { ...base, ...f } }),
    with: (f) => make({ ...base, ...f }),
  });
  return Object.assign(make({}), { lines });
}

Deno.test("ConnectRateLimiter admits a burst, then one per 1/rate, with the wait as the hint", () => {
  const bucket = new ConnectRateLimiter({ ratePerSecond: 100, burst: 3 }, 1_000);
  for (let i = 0; i < 3; i++) assert.deepEqual(bucket.admit(1_000), { ok: true });
  assert.deepEqual(bucket.admit(1_000), { ok: false, retryAfterMs: 10 });
  assert.deepEqual(bucket.admit(1_004), { ok: false, retryAfterMs: 6 });
  assert.deepEqual(bucket.admit(1_010), { ok: true });
  assert.deepEqual(bucket.admit(1_010), { ok: false, retryAfterMs: 10 });
  // A long pause refills up to the burst, not beyond.
  for (let i = 0; i < 3; i++) assert.deepEqual(bucket.admit(60_000), { ok: true });
  assert.equal(bucket.admit(60_000).ok, false);
});

Deno.test("ConnectRateLimiter with rate 0 admits everything; a clock going back refills nothing", () => {
  const off = new ConnectRateLimiter({ ratePerSecond: 0, burst: 1 }, 0);
  for (let i = 0; i < 1_000; i++) assert.equal(off.admit(0).ok, true);
  const bucket = new ConnectRateLimiter({ ratePerSecond: 1, burst: 1 }, 5_000);
  assert.equal(bucket.admit(5_000).ok, true);
  assert.deepEqual(bucket.admit(0), { ok: false, retryAfterMs: 1_000 });
  assert.deepEqual(bucket.admit(5_500), { ok: false, retryAfterMs: 500 });
});

Deno.test("WarnThrottle writes one line per interval and kind, counting the refusals it covers", () => {
  let now = 0;
  const log = recordingLogger();
  const throttle = new WarnThrottle(() => now, 1_000);
  for (let i = 0; i < 500; i++) throttle.warn(log, "a", "dial refused", { i });
  throttle.warn(log, "b", "other", {});
  now = 1_000;
  throttle.warn(log, "a", "dial refused", { i: 500 });
  assert.deepEqual(log.lines.map((l) => [l.msg, l.f.refused, l.f.i]), [
    ["dial refused", 1, 0],
    ["other", 1, undefined],
    ["dial refused", 500, 500],
  ]);
});

Deno.test("LazyCounter prunes items that stopped counting only at the threshold", () => {
  const live = new Set(["a", "b", "c"]);
  const counter = new LazyCounter<string, string>((x) => live.has(x));
  for (const x of live) counter.add("k", x);
  live.delete("b");
  assert.equal(counter.count("k", 10), 3, "below the threshold the count is an upper bound");
  assert.equal(counter.count("k", 3), 2, "at the threshold it is exact");
  counter.delete("k", "a");
  counter.delete("k", "c");
  assert.equal(counter.keys, 0, "an empty key is let go");
  assert.equal(counter.count("k", 1), 0);
});

Deno.test("overload flags: defaults on, and validation names the flag", () => {
  const parsed = parseServerOptions(["--uds-name=/tmp/x.sock", "--server-port=0"], {});
  assert.ok(!("help" in parsed));
  const o = parsed.options;
  assert.equal(o.knpMaxPendingDialsPerFrontend, 1_000);
  assert.equal(o.knpMaxConnectionsPerAgent, 10_000);
  assert.equal(o.knpAgentConnectRate, 100);
  assert.equal(o.knpAgentConnectBurst, 200);
  assert.equal(o.knpMaxMessageSize, 4 * 1024 * 1024 + 1024);
  validateOverloadOptions(o);
  const bad: [Partial<typeof o>, RegExp][] = [
    [{ knpMaxPendingDialsPerFrontend: 0 }, /--knp-max-pending-dials-per-frontend: must be at/],
    [{ knpMaxConnectionsPerAgent: 1.5 }, /--knp-max-connections-per-agent: must be at least 1/],
    [{ knpAgentConnectRate: -1 }, /--knp-agent-connect-rate: must be >= 0/],
    [{ knpAgentConnectBurst: 0 }, /--knp-agent-connect-burst: must be at least 1/],
    [{ knpMaxMessageSize: 100 }, /--knp-max-message-size: must be between/],
  ];
  for (const [patch, message] of bad) {
    assert.throws(() => validateOverloadOptions({ ...o, ...patch }), message);
  }
});

/** A core on a fake clock with in-memory agents and frontends on named "connections". */
function harness(options: Partial<ProxyServerOptions>) {
  const { timers } = fakeTimers();
  const events: ServerEvent[] = [];
  const log = recordingLogger();
  const server = new ProxyServer({
    serverId: "s1",
    timers,
    random: () => 0,
    logger: log,
    onEvent: (e) => events.push(e),
    ...options,
  });
  return {
    server,
    events,
    log,
    agent(agentId: string) {
      const [serverEnd, agentEnd] = memoryPipe();
      const hs = server.agentHandshake([agentId], [""]);
      server.addBackend(hs.agentId, hs.identifiers, serverEnd);
      return startPeer(agentEnd);
    },
    /** Opens a frontend stream on connection `key` and sends a DIAL_REQ on it. */
    dial(key: object, dialId: bigint) {
      const [clientEnd, serverEnd] = memoryPipe();
      server.serveFrontend(serverEnd, "test", key);
      const peer = startPeer(clientEnd);
      peer.end.send(dialRequest("10.0.0.1:80", dialId));
      return peer;
    },
  };
}

Deno.test("DialLimits: a frontend connection over its pending limit is refused, others are not", async () => {
  const h = harness({ maxPendingDialsPerFrontend: 3 });
  const agent = h.agent("a1");
  const storm = {};
  const calm = {};
  const stormers = [1n, 2n, 3n, 4n, 5n].map((id) => h.dial(storm, id));
  const healthy = h.dial(calm, 100n);
  await settle();
  assert.equal(h.server.pendingDials, 4, "three of the storm and the healthy one wait");
  for (const refused of stormers.slice(3)) {
    const rsp = refused.of("DIAL_RSP")[0]!.dialResponse;
    const info = parseDialError(rsp.error);
    assert.equal(info.kind, "server-overloaded");
    assert.match(info.message, /limit 3 per frontend connection/);
    assert.equal(refused.ends.length, 1, "the refused stream is closed");
  }
  assert.equal(healthy.of("DIAL_RSP").length, 0);
  const failures = h.events.filter((e) => e.kind === "dial-failure");
  assert.deepEqual(failures.map((e) => e.dialId), [4n, 5n]);
  const warns = h.log.lines.filter((l) => l.level === "warn" && l.msg === "dial refused");
  assert.equal(warns.length, 1, "one WARN line for the storm, not one per refused dial");
  // An answered dial frees a slot of its frontend connection.
  agent.end.send(dialResponse(1n, 11n));
  await settle();
  const next = h.dial(storm, 6n);
  await settle();
  assert.equal(next.of("DIAL_RSP").length, 0, "the sixth dial waits for the agent");
  assert.equal(h.server.pendingDials, 4);
  h.server.close();
  await settle();
  assert.equal(h.server.frontends.size, 0);
});

Deno.test("DialLimits: a full agent's dials go to another agent, then are refused naming it", async () => {
  // The default strategy starts at floor(random() * agents): 0 picks a1, 0.5 picks a2 (of two).
  const draws: number[] = [];
  const h = harness({ maxConnectionsPerAgent: 2, random: () => draws.shift() ?? 0 });
  const a1 = h.agent("a1");
  const key = {};
  h.dial(key, 1n);
  await settle();
  a1.end.send(dialResponse(1n, 11n)); // one established ...
  h.dial(key, 2n); // ... and one pending: a1 is full
  await settle();
  assert.equal(h.server.establishedConnections, 1);
  const refused = h.dial(key, 3n);
  await settle();
  const info = parseDialError(refused.of("DIAL_RSP")[0]!.dialResponse.error);
  assert.equal(info.kind, "server-overloaded");
  assert.equal(info.agentId, "a1");
  assert.match(info.message, /agent a1 has 2 open connections \(limit 2 per agent\)/);
  assert.equal(a1.of("DIAL_REQ").length, 2, "the refused dial never reached the agent");

  const a2 = h.agent("a2");
  draws.push(0, 0.5); // a1 first (full), then a2
  const moved = h.dial(key, 4n);
  await settle();
  assert.equal(moved.of("DIAL_RSP").length, 0, "the dial is not refused");
  assert.deepEqual(a2.of("DIAL_REQ").map((p) => p.dialRequest.random), [4n]);
  assert.equal(a1.of("DIAL_REQ").length, 2);
  // a1's pending dial fails: a1 has room again.
  a1.end.send(dialResponse(2n, 0n, "connection refused"));
  draws.push(0);
  h.dial(key, 5n);
  await settle();
  assert.deepEqual(a1.of("DIAL_REQ").map((p) => p.dialRequest.random), [1n, 2n, 5n]);
  h.server.close();
  await settle();
});

Deno.test("DialLimits counts per key and forgets ended streams", () => {
  type Conn = { state: string; backend: object | undefined };
  const agent = {};
  const limits = new DialLimits<object, Conn>({ maxPendingDialsPerFrontend: 2 }, {
    established: () => 0,
    agentId: () => "a1",
    dialError: (text) => text,
    now: () => 0,
  });
  const key = {};
  const conns: Conn[] = [0, 1, 2].map(() => ({ state: "pending", backend: agent }));
  for (const c of conns) limits.bind(c, key);
  limits.admitted(conns[0]!);
  limits.admitted(conns[1]!);
  assert.match(limits.check(conns[2]!, agent).refusal ?? "", /limit 2 per/);
  conns[0]!.state = "established";
  assert.equal(limits.check(conns[2]!, agent).refusal, undefined);
  for (const c of conns) limits.forget(c);
  assert.equal(limits.trackedKeys, 0, "no key outlives its streams");
});

Deno.test("gRPC link: a refusal's retry hint travels as grpc-retry-pushback-ms", async () => {
  const server = await serveGrpc({
    service: "agent",
    address: "127.0.0.1:0",
    onStream(incoming) {
      const err = new KnpError("OVERLOADED", "too many agents connecting");
      incoming.reject(Object.assign(err, { retryAfterMs: 1234 }));
    },
  });
  const channel = new GrpcChannel({ target: `127.0.0.1:${server.port}` });
  try {
    const err = await channel.openStream("agent", {}, { awaitHeaders: true }).then(
      () => assert.fail("the handshake should be refused"),
      (e: unknown) => e as Error & { retryAfterMs?: number },
    );
    assert.match(err.message, /RESOURCE_EXHAUSTED: too many agents connecting/);
    assert.equal(err.retryAfterMs, 1234);
    assert.equal(retryAfterOf(err), 1234);
  } finally {
    channel.close();
    await server.close();
  }
});

Deno.test("gRPC server: calls on one connection share a session key, other connections do not", async () => {
  const sessions: (object | undefined)[] = [];
  const seen = Promise.withResolvers<void>();
  const server = await serveGrpc({
    service: "proxy",
    address: "127.0.0.1:0",
    onStream(incoming) {
      sessions.push(incoming.session);
      if (sessions.length === 3) seen.resolve();
    },
  });
  const one = new GrpcChannel({ target: `127.0.0.1:${server.port}` });
  const two = new GrpcChannel({ target: `127.0.0.1:${server.port}` });
  try {
    await one.openStream("proxy", {});
    await one.openStream("proxy", {});
    await two.openStream("proxy", {});
    await seen.promise;
    assert.equal(typeof sessions[0], "object");
    assert.equal(sessions[0], sessions[1]);
    assert.notEqual(sessions[0], sessions[2]);
  } finally {
    one.close();
    two.close();
    await server.close();
  }
});

Deno.test("WebSocket link: Retry-After is read as seconds or an HTTP-date", () => {
  const now = Date.parse("Tue, 01 Dec 2026 03:00:00 GMT");
  assert.equal(parseRetryAfter("2", now), 2_000);
  assert.equal(parseRetryAfter(" 0 ", now), 0);
  assert.equal(parseRetryAfter("Tue, 01 Dec 2026 03:00:05 GMT", now), 5_000);
  assert.equal(parseRetryAfter("Tue, 01 Dec 2026 02:00:00 GMT", now), 0, "a past date: at once");
  assert.equal(parseRetryAfter("soon", now), undefined);
  assert.equal(parseRetryAfter(undefined, now), undefined);
});
