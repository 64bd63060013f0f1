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
import { AgentClient } from "../agent/agent_client.ts";
import { fakeDialer, FakeEndpoint } from "../agent/_test_socket.ts";
import { TunnelConn } from "../client/tunnel_conn.ts";
import { memoryPipe } from "@knp/transport/packet_stream";
import { fakeTimers, startPeer } from "@knp/testing/fakes";
import {
  DIAL_TIMEOUT_TEXT,
  NO_AGENT_AVAILABLE,
  ProxyServer,
  type ProxyServerOptions,
  type ServerEvent,
} from "./proxy_server.ts";

/** Lets every queued microtask (and the pipes' pumps) run. */
const settle = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

const text = (s: string) => new TextEncoder().encode(s);
const UNKNOWN = { type: "UNKNOWN", typeNumber: 99 } as unknown as Packet;
/** The dial explainer's trace events (tested in dial_explainer_test.ts); outcomes are tested here. */
const TRACE = new Set(["dial-requested", "dial-routed"]);

/** A server on a fake clock, with helpers that connect in-memory agents and frontends. */
function harness(options: Partial<ProxyServerOptions> = {}) {
  const { clock, timers } = fakeTimers();
  const events: ServerEvent[] = [];
  const server = new ProxyServer({
    serverId: "server-1",
    timers,
    random: () => 0,
    onEvent: (e) => TRACE.has(e.kind) || events.push(e),
    ...options,
  });
  return {
    clock,
    server,
    events,
    agent(agentId = "agent-1", identifiers = "", highWater?: number) {
      const [serverEnd, agentEnd] = memoryPipe({ highWater });
      const hs = server.agentHandshake([agentId], [identifiers]);
      const backend = server.addBackend(hs.agentId, hs.identifiers, serverEnd);
      return { backend, ...startPeer(agentEnd) };
    },
    frontend(highWater?: number) {
      const [clientEnd, serverEnd] = memoryPipe({ highWater });
      const conn = server.serveFrontend(serverEnd, "test");
      return { conn, ...startPeer(clientEnd) };
    },
    async close() {
      server.close();
      await settle();
    },
  };
}

type Harness = ReturnType<typeof harness>;

/** Dials through `agent` and answers with `connectId`; returns the frontend. */
async function establish(
  h: Harness,
  agent: ReturnType<Harness["agent"]>,
  dialId: bigint,
  connectId: bigint,
  address = "10.0.0.1:80",
  highWater?: number,
) {
  const f = h.frontend(highWater);
  f.end.send(dialRequest(address, dialId));
  await settle();
  agent.end.send(dialResponse(dialId, connectId));
  await settle();
  assert.equal(f.of("DIAL_RSP").at(-1)?.dialResponse.connectId, connectId);
  return f;
}

Deno.test("ProxyServer relays a dial, data both ways and a close between frontend and agent", async () => {
  const h = harness();
  const agent = h.agent();
  const f = h.frontend();

  const req = dialRequest("10.0.0.1:80", 42n);
  f.end.send(req);
  await settle();
  assert.deepEqual(agent.packets, [req], "DIAL_REQ is forwarded unchanged");
  assert.equal(h.server.pendingDials, 1);

  const rsp = dialResponse(42n, 1n);
  agent.end.send(rsp);
  await settle();
  assert.deepEqual(f.packets, [rsp], "DIAL_RSP is forwarded unchanged");
  assert.equal(h.server.pendingDials, 0);
  assert.equal(h.server.establishedConnections, 1);

  f.end.send(dataPacket(1n, text("ping")));
  agent.end.send(dataPacket(1n, text("pong")));
  await settle();
  assert.deepEqual(agent.packets.at(-1), dataPacket(1n, text("ping")));
  assert.deepEqual(f.packets.at(-1), dataPacket(1n, text("pong")));

  f.end.send(closeRequest(1n));
  await settle();
  assert.deepEqual(agent.packets.at(-1), closeRequest(1n));
  assert.equal(f.ends.length, 0, "the frontend waits for the agent's CLOSE_RSP");

  agent.end.send(closeResponse(1n));
  await settle();
  assert.deepEqual(f.packets.at(-1), closeResponse(1n));
  assert.deepEqual(f.ends, [undefined], "the frontend stream closes cleanly");
  assert.equal(h.server.pendingDials, 0);
  assert.equal(h.server.establishedConnections, 0);
  assert.equal(h.server.frontends.size, 0);
  assert.deepEqual(h.events.map((e) => e.kind), ["dial-success", "connection-closed"]);
  assert.equal(agent.ends.length, 0, "the agent stream stays up");
  await h.close();
});

Deno.test("ProxyServer answers No agent available and closes the frontend when no agent is connected", async () => {
  const h = harness();
  const f = h.frontend();
  f.end.send(dialRequest("10.0.0.1:80", 7n));
  await settle();
  assert.deepEqual(f.packets, [dialResponse(7n, 0n, NO_AGENT_AVAILABLE)]);
  assert.equal(NO_AGENT_AVAILABLE, "No agent available");
  assert.deepEqual(f.ends, [undefined]);
  assert.equal(h.server.pendingDials, 0);
  assert.deepEqual(h.events, [{ kind: "dial-failure", reason: "no_agent", dialId: 7n }]);
  await h.close();
});

Deno.test("ProxyServer forwards an agent's dial error and closes the frontend", async () => {
  const h = harness();
  const agent = h.agent();
  const f = h.frontend();
  f.end.send(dialRequest("127.0.0.1:1", 9n));
  await settle();
  const failure = dialResponse(9n, 0n, "dial tcp 127.0.0.1:1: connect: connection refused");
  agent.end.send(failure);
  await settle();
  // Upstream's text is kept; the knp tag names the kind, the server and the agent.
  assert.deepEqual(f.packets, [
    dialResponse(
      9n,
      0n,
      "dial tcp 127.0.0.1:1: connect: connection refused [knp: kind=dial-refused server=server-1 agent=agent-1]",
    ),
  ]);
  assert.deepEqual(f.ends, [undefined]);
  assert.equal(h.server.pendingDials, 0);
  assert.equal(h.server.establishedConnections, 0);
  assert.deepEqual(h.events, [{ kind: "dial-failure", reason: "error_response", dialId: 9n }]);
  await h.close();
});

Deno.test("ProxyServer takes the kind a knp agent states in its tag over the text's", async () => {
  const h = harness();
  const agent = h.agent();
  const f = h.frontend();
  f.end.send(dialRequest("nowhere.invalid:80", 10n));
  await settle();
  // The text alone would classify as "unknown"; the agent's typed kind wins.
  agent.end.send(
    dialResponse(10n, 0n, "dial tcp: lookup nowhere.invalid: odd resolver [knp: kind=dns-failure]"),
  );
  await settle();
  assert.deepEqual(f.packets, [
    dialResponse(
      10n,
      0n,
      "dial tcp: lookup nowhere.invalid: odd resolver [knp: kind=dns-failure server=server-1 agent=agent-1]",
    ),
  ]);
  await h.close();
});

Deno.test("ProxyServer events reach every subscriber until it unsubscribes", async () => {
  const h = harness();
  const seen: string[] = [];
  const off = h.server.events.on((e) => TRACE.has(e.kind) || seen.push(e.kind));
  h.server.events.on(() => {
    throw new Error("a failing listener does not stop the others");
  });
  const f = h.frontend();
  f.end.send(dialRequest("127.0.0.1:1", 11n));
  await settle();
  off();
  const g = h.frontend();
  g.end.send(dialRequest("127.0.0.1:1", 12n));
  await settle();
  assert.deepEqual(seen, ["dial-failure"]);
  assert.equal(h.events.length, 2);
  await h.close();
});

Deno.test("ProxyServer serveFrontend's ended resolves once the frontend stream is over", async () => {
  const h = harness();
  const f = h.frontend();
  let ended = false;
  const done = f.conn.ended.then(() => (ended = true));
  await settle();
  assert.equal(ended, false);
  f.end.close();
  await done;
  assert.equal(h.server.frontends.size, 0);
  await h.close();
});

Deno.test("ProxyServer forwards a frontend DIAL_CLS to the agent and closes a late DIAL_RSP's connection", async () => {
  const h = harness();
  const agent = h.agent();
  const f = h.frontend();
  f.end.send(dialRequest("10.0.0.1:80", 11n));
  f.end.send(closeDial(11n));
  await settle();
  assert.deepEqual(agent.packets.map((p) => p.type), ["DIAL_REQ", "DIAL_CLS"]);
  assert.deepEqual(agent.packets[1], closeDial(11n));
  assert.equal(h.server.pendingDials, 0);
  assert.equal(f.ends.length, 1);

  agent.clear();
  agent.end.send(dialResponse(11n, 3n));
  await settle();
  assert.deepEqual(agent.packets, [closeRequest(3n)], "the agent's orphan connection is closed");
  assert.equal(h.server.establishedConnections, 0);
  // The agent's answer to that CLOSE_REQ is dropped.
  agent.end.send(closeResponse(3n));
  await settle();
  assert.deepEqual(
    h.events.map((e) => e.kind === "dial-failure" ? e.reason : e.kind),
    ["frontend_close", "unrecognized_response"],
  );
  await h.close();
});

Deno.test("ProxyServer ignores a late failed DIAL_RSP without sending CLOSE_REQ", async () => {
  const h = harness();
  const agent = h.agent();
  agent.end.send(dialResponse(12345n, 0n, "dial tcp: lookup nowhere: no such host"));
  await settle();
  assert.deepEqual(agent.packets, []);
  await h.close();
});

Deno.test("ProxyServer sends DIAL_CLS to the agent when the frontend stream ends mid-dial", async () => {
  const h = harness();
  const agent = h.agent();
  const f = h.frontend();
  f.end.send(dialRequest("10.0.0.1:80", 13n));
  await settle();
  f.end.close();
  await settle();
  assert.deepEqual(agent.packets.at(-1), closeDial(13n));
  assert.equal(h.server.pendingDials, 0);
  assert.equal(h.server.frontends.size, 0);
  await h.close();
});

Deno.test("ProxyServer sends CLOSE_REQ to the agent when an established frontend stream ends", async () => {
  const h = harness();
  const agent = h.agent();
  const f = await establish(h, agent, 14n, 4n);
  f.end.close(new Error("client went away"));
  await settle();
  assert.deepEqual(agent.packets.at(-1), closeRequest(4n));
  assert.equal(h.server.establishedConnections, 0);
  assert.equal(h.server.frontends.size, 0);
  await h.close();
});

Deno.test("ProxyServer fails a dial after backendDialTimeoutMs and tells the agent with DIAL_CLS", async () => {
  const h = harness({ backendDialTimeoutMs: 1_000 });
  const agent = h.agent();
  const f = h.frontend();
  f.end.send(dialRequest("10.0.0.1:80", 15n));
  await settle();
  h.clock.tick(999);
  await settle();
  assert.equal(f.packets.length, 0);
  assert.equal(h.server.pendingDials, 1);
  h.clock.tick(1);
  await settle();
  assert.deepEqual(f.packets, [
    dialResponse(
      15n,
      0n,
      "timed out waiting for backend dial [knp: kind=dial-timeout server=server-1 agent=agent-1]",
    ),
  ]);
  assert.equal(DIAL_TIMEOUT_TEXT, "timed out waiting for backend dial");
  assert.deepEqual(agent.packets.at(-1), closeDial(15n));
  assert.equal(f.ends.length, 1);
  assert.equal(h.server.pendingDials, 0);
  assert.equal(h.clock.countTimers(), 0);
  await h.close();
});

Deno.test("ProxyServer clears the dial timer when the DIAL_RSP arrives in time", async () => {
  const h = harness({ backendDialTimeoutMs: 1_000 });
  const agent = h.agent();
  const f = await establish(h, agent, 16n, 1n);
  assert.equal(h.clock.countTimers(), 0);
  h.clock.tick(5_000);
  await settle();
  assert.equal(f.ends.length, 0);
  assert.equal(h.server.establishedConnections, 1);
  await h.close();
});

Deno.test("ProxyServer fails pending dials and closes established frontends when the agent disconnects", async () => {
  const h = harness();
  const agent = h.agent();
  const established = await establish(h, agent, 17n, 1n);
  const pending = h.frontend();
  pending.end.send(dialRequest("10.0.0.1:80", 18n));
  await settle();
  assert.equal(h.server.pendingDials, 1);

  agent.end.close();
  await settle();
  const closeRsp = established.of("CLOSE_RSP");
  assert.equal(closeRsp.length, 1);
  assert.equal(closeRsp[0]!.closeResponse.connectId, 1n);
  assert.equal(established.ends.length, 1);

  const dialRsp = pending.of("DIAL_RSP");
  assert.equal(dialRsp.length, 1);
  assert.equal(dialRsp[0]!.dialResponse.random, 18n);
  assert.equal(dialRsp[0]!.dialResponse.connectId, 0n);
  assert.match(dialRsp[0]!.dialResponse.error, /disconnected/);
  assert.equal(pending.ends.length, 1);

  assert.equal(h.server.pendingDials, 0);
  assert.equal(h.server.establishedConnections, 0);
  assert.equal(h.server.frontends.size, 0);
  assert.equal(h.server.ready, false);
  await h.close();
});

Deno.test("ProxyServer answers frontend DATA before DIAL_REQ with backend not initialized", async () => {
  const h = harness();
  h.agent();
  const f = h.frontend();
  f.end.send(dataPacket(5n, text("early")));
  await settle();
  assert.deepEqual(f.packets, [closeResponse(5n, "backend not initialized")]);
  assert.equal(f.ends.length, 1, "the stream is no longer served");
  await h.close();
});

Deno.test("ProxyServer answers CLOSE_REQ before a dial with backend uninitialized and keeps serving", async () => {
  const h = harness();
  const agent = h.agent();
  const f = h.frontend();
  f.end.send(closeRequest(6n));
  await settle();
  assert.deepEqual(f.packets, [closeResponse(6n, "backend uninitialized")]);
  assert.equal(f.ends.length, 0);
  f.end.send(dialRequest("10.0.0.1:80", 19n));
  await settle();
  assert.equal(agent.of("DIAL_REQ").length, 1, "the stream still dials");
  await h.close();
});

Deno.test("ProxyServer closes both connections when frontend DATA carries a mismatched connectID", async () => {
  const h = harness();
  const agent = h.agent();
  const f = await establish(h, agent, 20n, 1n);
  agent.clear();
  f.clear();
  f.end.send(dataPacket(2n, text("wrong")));
  await settle();
  assert.deepEqual(agent.packets, [closeRequest(2n), closeRequest(1n)]);
  assert.deepEqual(f.packets, [
    closeResponse(2n, "mismatched connection IDs"),
    closeResponse(1n, "mismatched connection IDs"),
  ]);
  assert.equal(f.ends.length, 1);
  assert.equal(h.server.establishedConnections, 0);
  await h.close();
});

Deno.test("ProxyServer sends CLOSE_REQ to the agent for DATA with an unknown connectID", async () => {
  const h = harness();
  const agent = h.agent();
  agent.end.send(dataPacket(77n, text("orphan")));
  agent.end.send(dataPacket(0n, text("ignored")));
  agent.end.send(closeResponse(78n)); // unknown CLOSE_RSP: dropped
  await settle();
  assert.deepEqual(agent.packets, [closeRequest(77n)]);
  await h.close();
});

Deno.test("ProxyServer ignores frontend DATA with connectID 0", async () => {
  const h = harness();
  const agent = h.agent();
  const f = await establish(h, agent, 21n, 1n);
  agent.clear();
  f.end.send(dataPacket(0n, text("zero")));
  await settle();
  assert.deepEqual(agent.packets, []);
  assert.equal(f.ends.length, 0);
  await h.close();
});

Deno.test("ProxyServer answers the frontend itself when the agent does not answer CLOSE_REQ in time", async () => {
  const h = harness({ closeTimeoutMs: 500 });
  const agent = h.agent();
  const f = await establish(h, agent, 22n, 1n);
  f.end.send(closeRequest(1n));
  await settle();
  f.clear();
  h.clock.tick(500);
  await settle();
  assert.deepEqual(f.packets, [closeResponse(1n, "timed out waiting for the agent to close")]);
  assert.equal(f.ends.length, 1);
  assert.equal(h.server.establishedConnections, 0);
  await h.close();
});

Deno.test("ProxyServer cancels the dial when the frontend sends CLOSE_REQ while pending", async () => {
  const h = harness();
  const agent = h.agent();
  const f = h.frontend();
  f.end.send(dialRequest("10.0.0.1:80", 23n));
  f.end.send(closeRequest(0n));
  await settle();
  assert.deepEqual(agent.packets.at(-1), closeDial(23n));
  assert.deepEqual(f.packets, [closeResponse(0n)]);
  assert.equal(h.server.pendingDials, 0);
  await h.close();
});

Deno.test("ProxyServer marks a backend draining on DRAIN and prefers a non-draining agent", async () => {
  const h = harness(); // random() is 0: the first agent is tried first
  const a = h.agent("agent-a");
  const b = h.agent("agent-b");
  const first = h.frontend();
  first.end.send(dialRequest("10.0.0.1:80", 30n));
  await settle();
  assert.equal(a.of("DIAL_REQ").length, 1);

  a.end.send(drain());
  await settle();
  assert.equal(a.backend.draining, true);
  const second = h.frontend();
  second.end.send(dialRequest("10.0.0.1:80", 31n));
  await settle();
  assert.equal(b.of("DIAL_REQ").length, 1, "the draining agent is avoided");
  assert.equal(a.of("DIAL_REQ").length, 1);

  b.end.send(drain());
  await settle();
  const third = h.frontend();
  third.end.send(dialRequest("10.0.0.1:80", 32n));
  await settle();
  assert.equal(a.of("DIAL_REQ").length, 2, "every agent draining: fall back to one of them");
  assert.equal(third.of("DIAL_RSP").length, 0, "the dial is not refused");
  await h.close();
});

Deno.test("ProxyServer agentHandshake rejects anything but exactly one agent ID", () => {
  const { server } = harness();
  assert.throws(() => server.agentHandshake([], [""]), (err: unknown) => {
    assert.ok(err instanceof KnpError);
    assert.equal(err.code, "HANDSHAKE");
    assert.equal(err.message, "expected one agent ID in the context, got []");
    return true;
  });
  assert.throws(() => server.agentHandshake(["a", "b"], [""]), {
    message: "expected one agent ID in the context, got [a b]",
  });
});

Deno.test("ProxyServer agentHandshake rejects two identifier sets and unparsable identifiers", () => {
  const { server } = harness();
  assert.throws(() => server.agentHandshake(["a"], ["host=x", "host=y"]), {
    message: "expected at most one set of agent identifiers in the context, got [host=x host=y]",
  });
  assert.throws(() => server.agentHandshake(["a"], ["a=%zz"]), {
    message: 'fail to parse url encoded string: invalid URL escape "%zz"',
  });
  assert.throws(() => server.agentHandshake(["a"], ["host=x;host=y"]), {
    message: "fail to parse url encoded string: invalid semicolon separator in query",
  });
});

Deno.test("ProxyServer agentHandshake returns serverid and servercount headers and the identifiers", () => {
  const { server } = harness({ serverId: "srv-9", serverCount: 3 });
  const hs = server.agentHandshake(["agent-x"], ["host=node1&ipv4=10.0.0.7&default-route=true"]);
  assert.equal(hs.agentId, "agent-x");
  assert.deepEqual(hs.headers, { serverid: "srv-9", servercount: "3" });
  assert.deepEqual(hs.identifiers, {
    ipv4: ["10.0.0.7"],
    ipv6: [],
    host: ["node1"],
    cidr: [],
    defaultRoute: true,
  });
  const bare = server.agentHandshake(["agent-y"], []);
  assert.deepEqual(bare.identifiers.host, []);
  assert.equal(bare.identifiers.defaultRoute, false);
});

Deno.test("ProxyServer keeps connectIDs of two streams with the same agentID apart", async () => {
  const h = harness({ strategies: ["destHost"] });
  const one = h.agent("same-agent", "host=node1");
  const two = h.agent("same-agent", "host=node2");
  const f1 = await establish(h, one, 40n, 1n, "node1:80");
  const f2 = await establish(h, two, 41n, 1n, "node2:80");
  assert.equal(h.server.establishedConnections, 2);

  one.end.send(dataPacket(1n, text("from one")));
  two.end.send(dataPacket(1n, text("from two")));
  await settle();
  assert.deepEqual(f1.of("DATA"), [dataPacket(1n, text("from one"))]);
  assert.deepEqual(f2.of("DATA"), [dataPacket(1n, text("from two"))]);

  f2.end.send(dataPacket(1n, text("to two")));
  await settle();
  assert.equal(one.of("DATA").length, 0);
  assert.deepEqual(two.of("DATA"), [dataPacket(1n, text("to two"))]);

  // The first stream going away leaves the second stream's connection alone.
  one.end.close();
  await settle();
  assert.equal(f1.ends.length, 1);
  assert.equal(f2.ends.length, 0);
  assert.equal(h.server.establishedConnections, 1);
  two.end.send(dataPacket(1n, text("still here")));
  await settle();
  assert.equal(f2.of("DATA").length, 2);
  await h.close();
});

Deno.test("ProxyServer ignores UNKNOWN packets from either side and keeps the connection working", async () => {
  const h = harness();
  const agent = h.agent();
  const f = h.frontend();
  f.end.send(UNKNOWN);
  agent.end.send(UNKNOWN);
  await settle();
  assert.equal(f.packets.length, 0);
  assert.equal(agent.packets.length, 0);
  f.end.send(dialRequest("10.0.0.1:80", 50n));
  await settle();
  agent.end.send(dialResponse(50n, 1n));
  await settle();
  f.end.send(UNKNOWN);
  agent.end.send(UNKNOWN);
  f.end.send(dataPacket(1n, text("a")));
  agent.end.send(dataPacket(1n, text("b")));
  await settle();
  assert.deepEqual(agent.packets.map((p) => p.type), ["DIAL_REQ", "DATA"]);
  assert.deepEqual(f.packets.map((p) => p.type), ["DIAL_RSP", "DATA"]);
  assert.equal(f.ends.length, 0);
  assert.equal(agent.ends.length, 0);
  await h.close();
});

Deno.test("ProxyServer resets a connection whose frontend stops reading while others keep flowing", async () => {
  const KiB = 1024;
  const h = harness({ guard: { stallMs: 100, maxBytes: 64 * KiB } });
  const agent = h.agent();
  const stalledConn = await establish(h, agent, 60n, 1n, "10.0.0.1:80", 16 * KiB);
  const healthy = await establish(h, agent, 61n, 2n, "10.0.0.1:80", 16 * KiB);
  stalledConn.end.pause(); // this frontend stops reading
  agent.clear();

  const rounds = 20;
  for (let i = 0; i < rounds; i++) {
    agent.end.send(dataPacket(1n, new Uint8Array(8 * KiB)));
    agent.end.send(dataPacket(2n, new Uint8Array([i])));
  }
  await settle();
  // Over its mark, the stalled connection holds the agent stream for stallMs first.
  assert.equal(agent.backend.pause.holders, 1);
  // Chunks 1 and 2 fit under the 16 KiB mark; chunk 3 goes over it and pauses the agent stream.
  assert.equal(healthy.of("DATA").length, 2, "the agent stream is held");
  assert.equal(stalledConn.ends.length, 0);

  h.clock.tick(100);
  await settle();
  // The stalled connection let go, filled up to maxBytes and was reset alone.
  assert.deepEqual(
    healthy.of("DATA").map((p) => p.data.data[0]),
    Array.from({ length: rounds }, (_, i) => i),
    "the healthy connection received every chunk, in order",
  );
  assert.equal(healthy.ends.length, 0);
  assert.ok(agent.of("CLOSE_REQ").length >= 1);
  assert.ok(agent.of("CLOSE_REQ").every((p) => p.closeRequest.connectId === 1n));
  assert.equal(h.server.establishedConnections, 1);
  assert.equal(agent.backend.pause.holders, 0);

  // Once it reads again, the stalled frontend sees what was buffered, then the error.
  stalledConn.end.resume();
  await settle();
  assert.equal(stalledConn.ends.length, 1);
  assert.ok(stalledConn.ends[0] instanceof KnpError);
  assert.equal((stalledConn.ends[0] as KnpError).code, "BUFFER_OVERFLOW");
  assert.ok(stalledConn.of("DATA").length <= 9, "no more than maxBytes were buffered");

  // The healthy connection keeps working afterwards.
  agent.end.send(dataPacket(2n, text("after")));
  await settle();
  assert.deepEqual(healthy.of("DATA").at(-1), dataPacket(2n, text("after")));
  await h.close();
});

Deno.test("ProxyServer close ends every frontend and agent stream", async () => {
  const h = harness();
  const agent = h.agent();
  const f = await establish(h, agent, 70n, 1n);
  const idle = h.frontend();
  h.server.close();
  await settle();
  assert.deepEqual(agent.packets.at(-1), closeRequest(1n));
  assert.equal(f.ends.length, 1);
  assert.equal(idle.ends.length, 1);
  assert.equal(agent.ends.length, 1);
  assert.equal(h.server.frontends.size, 0);
  assert.equal(h.server.establishedConnections, 0);
});

Deno.test("ProxyServer refuses a dial ID that another frontend's dial is using", async () => {
  const h = harness();
  const agent = h.agent();
  const first = h.frontend();
  const second = h.frontend();
  first.end.send(dialRequest("10.0.0.1:80", 80n));
  await settle();
  second.end.send(dialRequest("10.0.0.2:80", 80n));
  await settle();
  assert.deepEqual(second.packets, [dialResponse(80n, 0n, "dial ID 80 is already in use")]);
  assert.equal(second.ends.length, 1);
  assert.equal(agent.of("DIAL_REQ").length, 1);
  assert.equal(h.server.pendingDials, 1, "the first dial is untouched");
  agent.end.send(dialResponse(80n, 1n));
  await settle();
  assert.equal(first.of("DIAL_RSP").length, 1);
  await h.close();
});

Deno.test("ProxyServer refuses a second DIAL_REQ on a stream that already carries a dial", async () => {
  const h = harness();
  const agent = h.agent();
  const f = await establish(h, agent, 81n, 1n);
  f.clear();
  f.end.send(dialRequest("10.0.0.2:80", 82n));
  await settle();
  assert.deepEqual(f.packets, [dialResponse(82n, 0n, "this stream already carries a dial")]);
  assert.equal(agent.of("DIAL_REQ").length, 1);
  assert.equal(h.server.establishedConnections, 1);
  await h.close();
});

Deno.test("ProxyServer closes the agent's connection when its DIAL_RSP comes after the dial timeout", async () => {
  const h = harness({ backendDialTimeoutMs: 1_000 });
  const agent = h.agent();
  const f = h.frontend();
  f.end.send(dialRequest("10.0.0.1:80", 83n));
  await settle();
  h.clock.tick(1_000);
  await settle();
  agent.clear();
  agent.end.send(dialResponse(83n, 6n));
  await settle();
  assert.deepEqual(agent.packets, [closeRequest(6n)]);
  assert.equal(h.server.establishedConnections, 0);
  await h.close();
});

Deno.test("ProxyServer pauses a writing frontend while the agent stream is full and resumes it on drain", async () => {
  const KiB = 1024;
  const h = harness();
  const agent = h.agent("agent-1", "", 16 * KiB);
  const busy = await establish(h, agent, 84n, 1n);
  const other = await establish(h, agent, 85n, 2n);
  agent.clear();
  agent.end.pause(); // the agent stops reading for a while
  for (let i = 0; i < 6; i++) busy.end.send(dataPacket(1n, new Uint8Array(8 * KiB).fill(i)));
  await settle();
  assert.ok(busy.end.bufferedBytes > 0, "the server stopped taking the busy frontend's packets");
  assert.ok(agent.backend.stream.bufferedBytes > 16 * KiB);
  // The other direction is not blocked: the agent's DATA still reaches another frontend.
  agent.end.send(dataPacket(2n, text("meanwhile")));
  await settle();
  assert.deepEqual(other.of("DATA"), [dataPacket(2n, text("meanwhile"))]);

  agent.end.resume();
  await settle();
  const fromBusy = agent.of("DATA").filter((p) => p.data.connectId === 1n);
  assert.deepEqual(fromBusy.map((p) => p.data.data[0]), [0, 1, 2, 3, 4, 5]);
  assert.equal(busy.end.bufferedBytes, 0);
  await h.close();
});

/** A ProxyServer with a real AgentClient (fake endpoints) behind it, for end-to-end tests. */
function stack(writeMode: "instant" | "gated") {
  const h = harness({ backendDialTimeoutMs: 0 });
  const { dialer, sockets } = fakeDialer(() => new FakeEndpoint({ writeMode }));
  const [serverEnd, agentEnd] = memoryPipe();
  const hs = h.server.agentHandshake(["agent-1"], [""]);
  h.server.addBackend(hs.agentId, hs.identifiers, serverEnd);
  const agent = new AgentClient({ stream: agentEnd, serverId: "server-1", dialer });
  agent.start();
  const tunnel = async () => {
    const [clientEnd, frontendEnd] = memoryPipe();
    h.server.serveFrontend(frontendEnd);
    const conn = new TunnelConn(clientEnd, "10.0.0.1:80", {}, () => {});
    await conn.dial("tcp", {});
    return conn;
  };
  return { h, agent, sockets, tunnel };
}

Deno.test("ProxyServer carries a TunnelConn to an AgentClient endpoint and back", async () => {
  const { h, agent, sockets, tunnel } = stack("instant");
  const conn = await tunnel();
  assert.equal(conn.connectId, 1n);
  const writer = conn.writable.getWriter();
  await writer.write(text("request"));
  writer.releaseLock();
  await settle();
  const socket = sockets[0]!;
  assert.equal(new TextDecoder().decode(socket.written), "request");
  socket.push(text("response"));
  socket.end();
  const chunks: string[] = [];
  for await (const chunk of conn.readable) chunks.push(new TextDecoder().decode(chunk));
  assert.deepEqual(chunks, ["response"]);
  await conn.closed;
  await settle();
  assert.equal(socket.closed, true);
  assert.deepEqual(
    [h.server.pendingDials, h.server.establishedConnections, h.server.frontends.size],
    [0, 0, 0],
  );
  assert.equal(agent.connections, 0);
  agent.close();
  await h.close();
});

Deno.test("ProxyServer delivers a client's last bytes to the endpoint before the close completes", async () => {
  const { h, agent, sockets, tunnel } = stack("gated");
  const conn = await tunnel();
  const writer = conn.writable.getWriter();
  await writer.write(text("last words"));
  writer.releaseLock();
  conn.close();
  await settle();
  const socket = sockets[0]!;
  assert.equal(socket.closed, false, "the agent waits for the queued write");
  socket.releaseWrites("instant");
  await conn.closed;
  assert.equal(conn.closeError, "");
  assert.equal(new TextDecoder().decode(socket.written), "last words");
  assert.equal(socket.closed, true);
  await settle();
  assert.equal(h.server.establishedConnections, 0);
  agent.close();
  await h.close();
});
