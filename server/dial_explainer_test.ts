import assert from "node:assert/strict";
import {
  closeRequest,
  closeResponse,
  dataPacket,
  type DecodedPacket,
  dialRequest,
  dialResponse,
  parseAgentIdentifiers,
} from "@knp/proto";
import { memoryPipe, type PacketStream } from "@knp/transport/packet_stream";
import { ProxyServer } from "./proxy_server.ts";
import { AdminPages } from "./status.ts";
import { Ring } from "./dial_record.ts";

/** A started stream end whose packets can be awaited by type, in arrival order. */
function receiver(end: PacketStream) {
  const queue: DecodedPacket[] = [];
  const waiting: { type: string; resolve: (p: DecodedPacket) => void }[] = [];
  end.start({
    onPacket(p) {
      const i = waiting.findIndex((w) => w.type === p.type);
      if (i >= 0) waiting.splice(i, 1)[0]!.resolve(p);
      else queue.push(p);
    },
    onEnd() {},
  });
  return {
    next<T extends DecodedPacket["type"]>(type: T): Promise<Extract<DecodedPacket, { type: T }>> {
      const i = queue.findIndex((p) => p.type === type);
      if (i >= 0) {
        return Promise.resolve(queue.splice(i, 1)[0] as Extract<DecodedPacket, { type: T }>);
      }
      return new Promise((resolve) =>
        waiting.push({ type, resolve: resolve as (p: DecodedPacket) => void })
      );
    },
  };
}

function setup(explainDials: number) {
  const core = new ProxyServer({ serverId: "s1" });
  const pages = new AdminPages(core, { explainDials });
  const [agentEnd, serverEnd] = memoryPipe();
  core.addBackend("agent-1", parseAgentIdentifiers("zone=z1"), serverEnd);
  const agent = receiver(agentEnd);
  const frontend = () => {
    const [fe, feServer] = memoryPipe();
    core.serveFrontend(feServer, "kube-test/1.0");
    return { end: fe, rx: receiver(fe) };
  };
  return { core, pages, agentEnd, agent, frontend };
}

/** Dials through `f`, answers as the agent with `connectId`, and carries 3 bytes client → agent. */
async function openTunnel(
  t: ReturnType<typeof setup>,
  f: ReturnType<ReturnType<typeof setup>["frontend"]>,
  address: string,
  dialId: bigint,
  connectId: bigint,
): Promise<void> {
  f.end.send(dialRequest(address, dialId));
  await t.agent.next("DIAL_REQ");
  t.agentEnd.send(dialResponse(dialId, connectId));
  await f.rx.next("DIAL_RSP");
  f.end.send(dataPacket(connectId, new Uint8Array(3)));
  await t.agent.next("DATA");
}

Deno.test("Ring keeps the newest entries and returns what it evicts", () => {
  const ring = new Ring<number>(3);
  assert.deepEqual(ring.newestFirst(), []);
  for (const n of [1, 2, 3]) assert.equal(ring.push(n), undefined);
  assert.equal(ring.push(4), 1);
  assert.deepEqual(ring.newestFirst(), [4, 3, 2]);
  assert.deepEqual(ring.newestFirst(2), [4, 3]);
  assert.equal(ring.size, 3);
});

Deno.test("Ring finds an entry by the number of its push while it is held", () => {
  const ring = new Ring<string>(2);
  assert.equal(ring.nth(1), undefined);
  for (const x of ["a", "b", "c"]) ring.push(x);
  assert.equal(ring.pushed, 3);
  assert.deepEqual([0, 1, 2, 3, 4].map((n) => ring.nth(n)), [
    undefined,
    undefined,
    "b",
    "c",
    undefined,
  ]);
});

Deno.test("explainer: a good dial's timeline, route, bytes, first bytes and close", async () => {
  const t = setup(10);
  const { core, pages, agentEnd, agent, frontend } = t;
  const f = frontend();
  await openTunnel(t, f, "10.0.0.1:443", 5n, 9n);
  agentEnd.send(dataPacket(9n, new Uint8Array(5)));
  await f.rx.next("DATA");
  f.end.send(closeRequest(9n));
  await agent.next("CLOSE_REQ");
  agentEnd.send(closeResponse(9n));
  await f.rx.next("CLOSE_RSP");
  const d = pages.explainer.get("5")!;
  assert.equal(d.address, "10.0.0.1:443");
  assert.deepEqual(d.frontend, { peer: "memory:b", userAgent: "kube-test/1.0" });
  assert.deepEqual(d.policy, { decision: "allowed" });
  assert.deepEqual(d.route, {
    agentId: "agent-1",
    strategy: "default",
    zone: null,
    load: 0,
    candidates: 1,
    draining: 0,
  });
  assert.equal((d.dialResponse as { ok: boolean }).ok, true);
  assert.equal(d.connectId, "9");
  assert.deepEqual(d.bytes, { toAgent: 3, toFrontend: 5 });
  const first = d.firstByte as Record<string, number | null>;
  assert.ok(first.toAgentMs !== null && first.toFrontendMs !== null, JSON.stringify(first));
  assert.deepEqual(d.close, { reason: "close_request" });
  assert.equal(d.phase, "closed");
  const steps = (d.timeline as { event: string }[]).map((s) => s.event);
  assert.deepEqual(steps, [
    "dial-requested",
    "policy-allowed",
    "agent-chosen",
    "dial-response",
    "dial-established",
    "first-byte-to-agent",
    "first-byte-to-frontend",
    "frontend-close-request",
    "close-response",
    "connection-closed",
    "frontend-ended",
  ]);
  const durations = d.durations as {
    dialMs: number | null;
    connectionMs: number | null;
    totalMs: number | null;
  };
  assert.ok(durations.dialMs !== null && durations.connectionMs !== null, JSON.stringify(d));
  assert.ok(durations.totalMs !== null && durations.totalMs >= durations.connectionMs!);
  pages.dispose();
  core.close();
});

Deno.test("explainer: a refused dial names the agent's error and kind; the ring evicts", async () => {
  const { core, pages, agentEnd, agent, frontend } = setup(2);
  const f = frontend();
  f.end.send(dialRequest("127.0.0.1:1", 6n));
  await agent.next("DIAL_REQ");
  agentEnd.send(dialResponse(6n, 0n, "dial tcp 127.0.0.1:1: connect: connection refused"));
  await f.rx.next("DIAL_RSP");
  const d = pages.explainer.get("6")!;
  assert.equal(d.phase, "failed");
  assert.equal(d.failure, "error_response");
  assert.deepEqual(d.dialResponse && { ...d.dialResponse as object, ms: 0 }, {
    ok: false,
    ms: 0,
    error: "dial tcp 127.0.0.1:1: connect: connection refused",
    kind: "dial-refused",
  });
  const errors = pages.explainer.recentErrors();
  assert.equal(errors[0]?.kind, "dial-failed");
  assert.equal(errors[0]?.dialId, "6");
  // two more dials fill the ring of 2: 6 is evicted
  for (const id of [7n, 8n]) {
    const g = frontend();
    g.end.send(dialRequest("127.0.0.1:1", id));
    await agent.next("DIAL_REQ");
  }
  assert.equal(pages.explainer.get("6"), undefined);
  assert.deepEqual(pages.explainer.list().map((x) => x.dialId), ["8", "7"]);
  pages.dispose();
  core.close();
});

Deno.test("explainer: an open tunnel's bytes stay off a later dial that reuses its ID", async () => {
  const t = setup(10);
  const { core, pages, agent, frontend } = t;
  const f = frontend();
  await openTunnel(t, f, "10.0.0.1:443", 5n, 9n);
  const g = frontend();
  g.end.send(dialRequest("10.0.0.2:443", 5n));
  await agent.next("DIAL_REQ");
  f.end.send(dataPacket(9n, new Uint8Array(4)));
  await agent.next("DATA");
  const [later, first] = pages.explainer.list();
  assert.equal(later?.address, "10.0.0.2:443");
  assert.deepEqual(later?.bytes, { toAgent: 0, toFrontend: 0 });
  assert.equal(first?.address, "10.0.0.1:443");
  assert.deepEqual(first?.bytes, { toAgent: 7, toFrontend: 0 });
  pages.dispose();
  core.close();
});

Deno.test("status: drain marks the agent's streams; later dials prefer another agent", async () => {
  const { core, pages, agent, frontend } = setup(10);
  const [otherEnd, otherServer] = memoryPipe();
  core.addBackend("agent-2", parseAgentIdentifiers(""), otherServer);
  const other = receiver(otherEnd);
  assert.equal(pages.drain("agent-1"), 1);
  assert.equal(pages.drain("nobody"), 0);
  const agents = pages.agents();
  assert.deepEqual(agents.map((a) => [a.agentId, a.draining, a.drainedBy]), [
    ["agent-1", true, "status-page"],
    ["agent-2", false, null],
  ]);
  for (const id of [11n, 12n, 13n]) {
    const f = frontend();
    f.end.send(dialRequest("10.0.0.1:443", id));
    await other.next("DIAL_REQ");
  }
  const routes = pages.explainer.list().map((d) => d.route as Record<string, unknown>);
  assert.deepEqual(routes.map((r) => [r.agentId, r.candidates, r.draining]), [
    ["agent-2", 2, 1],
    ["agent-2", 2, 1],
    ["agent-2", 2, 1],
  ]);
  void agent;
  const res = pages.handler(() => new Response("fallback"))(
    new Request("http://127.0.0.1:1/status/agents/agent-2/drain", { method: "POST" }),
  );
  assert.equal(res.status, 403, "a POST without the action header is refused");
  await res.body?.cancel();
  const cross = pages.handler(() => new Response("fallback"))(
    new Request("http://127.0.0.1:1/status/agents/agent-2/drain", {
      method: "POST",
      headers: { "x-knp-action": "drain", origin: "http://evil.example" },
    }),
  );
  assert.equal(cross.status, 403, "a cross-origin POST is refused");
  await cross.body?.cancel();
  assert.equal(pages.agents()[1]?.draining, false);
  pages.dispose();
  core.close();
});
