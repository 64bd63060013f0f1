/**
 * The admin port's dial explainer and the server's truthful `/readyz`, through real processes:
 * a server (HTTP-CONNECT frontend on a UDS) and real agents; a good dial and a dial to a closed
 * port are explained with the right fields; the server's `/readyz?verbose` names what is missing
 * and the agent's says how many servers of how many it holds.
 *
 * @module
 */

import assert from "node:assert/strict";
import { awaitTables, CLOSED_PORT, startAgent, startServer } from "./framework.ts";
import { connect, endpointOf, tunnel } from "./connect_client.ts";
import { startEchoBackend } from "./backends.ts";

type Dial = Record<string, unknown> & {
  dialId: string;
  address: string;
  phase: string;
  route: Record<string, unknown> | null;
  dialResponse: Record<string, unknown> | null;
  bytes: { toAgent: number; toFrontend: number };
  firstByte: { toAgentMs: number | null; toFrontendMs: number | null };
  close: { reason: string } | null;
  timeline: { event: string }[];
};

async function adminJson(port: number, path: string): Promise<unknown> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  assert.equal(res.status, 200, path);
  return await res.json();
}

Deno.test("dial explainer: a good dial and a dial to a closed port, explained", async () => {
  await using echo = startEchoBackend();
  await using server = await startServer({
    extraArgs: ["--mode=http-connect", "--knp-explain-dials=100", "--v=5"],
  });
  await using agent = await startAgent(server, { agentId: "explained-agent" });
  await server.agents(1);
  const agentReady = await fetch(`http://127.0.0.1:${agent.healthPort}/readyz?verbose`);
  assert.equal(agentReady.status, 200);
  assert.equal(
    await agentReady.text(),
    "[+]ping ok\n[+]server-connected ok\n[+]servers-held ok: 1 of 1 server (test-server)\n" +
      "check passed\n",
  );
  const endpoint = await endpointOf(server);

  const conn = await tunnel(endpoint, echo.address);
  await conn.write("hello");
  assert.equal(new TextDecoder().decode(await conn.readExactly(5)), "hello");
  conn.close();
  // The table records (--v=5) follow the core's close events.
  await awaitTables(server.process, (g) => g.frontends === 0, "the tunnel to end on the server");

  const refused = await connect(endpoint, `127.0.0.1:${CLOSED_PORT}`);
  assert.notEqual(refused.head.status, 200);

  const { dials } = await adminJson(server.adminPort, "/debug/dials") as { dials: Dial[] };
  const good = dials.find((d) => d.address === echo.address)!;
  assert.ok(good, JSON.stringify(dials));
  assert.equal(good.phase, "closed");
  assert.equal(good.route?.agentId, "explained-agent");
  assert.equal(good.route?.strategy, "default");
  assert.equal(good.route?.candidates, 1);
  assert.equal(good.dialResponse?.ok, true);
  assert.deepEqual(good.bytes, { toAgent: 5, toFrontend: 5 });
  assert.ok(good.firstByte.toAgentMs !== null && good.firstByte.toFrontendMs !== null);
  // The HTTP-CONNECT frontend turns the client's EOF into a CLOSE_REQ to the agent.
  assert.deepEqual(good.close, { reason: "close_request" });

  const bad = dials.find((d) => d.address === `127.0.0.1:${CLOSED_PORT}`)!;
  assert.ok(bad, JSON.stringify(dials));
  assert.equal(bad.phase, "failed");
  assert.equal(bad.failure, "error_response");
  assert.equal(bad.dialResponse?.ok, false);
  assert.equal(bad.dialResponse?.kind, "dial-refused");
  assert.match(String(bad.dialResponse?.error), /connection refused/);
  assert.deepEqual(
    bad.timeline.map((s) => s.event).slice(0, 5),
    ["dial-requested", "policy-allowed", "agent-chosen", "dial-failed", "dial-response"],
  );
  // One dial by its ID, and the recent errors of the status JSON.
  const one = await adminJson(server.adminPort, `/debug/dials/${bad.dialId}`) as Dial;
  assert.equal(one.dialId, bad.dialId);
  const status = await adminJson(server.adminPort, "/status.json") as {
    recentErrors: { kind: string; dialId?: string }[];
  };
  assert.ok(status.recentErrors.some((e) => e.kind === "dial-failed" && e.dialId === bad.dialId));
  const missing = await fetch(`http://127.0.0.1:${server.adminPort}/debug/dials/12345`);
  assert.equal(missing.status, 404);
  await missing.body?.cancel();
});

Deno.test("server /readyz: every routing class needs an agent; zones are reported", async () => {
  await using server = await startServer({
    extraArgs: [
      "--proxy-strategies=destHost,defaultRoute",
      "--knp-zone-cidrs=zone-a=10.0.0.0/16,zone-b=10.1.0.0/16",
    ],
  });
  const verbose = async () => {
    const res = await server.health("/readyz?verbose");
    return { status: res.status, body: await res.text() };
  };
  let r = await verbose();
  assert.equal(r.status, 500);
  assert.match(r.body, /^no connection to any proxy agent\n/);
  await using _hosts = await startAgent(server, {
    extraArgs: ["--agent-identifiers=host=node-1&zone=zone-a"],
  });
  await server.agents(1);
  r = await verbose();
  assert.equal(r.status, 500, "upstream's rule holds, but no agent takes other addresses");
  assert.equal(
    r.body,
    "[+]strategy-destHost ok: 1 host\n" +
      "[-]strategy-defaultRoute failed: no agent advertises default-route=true\n" +
      "[+]zone-zone-a ok: 1 agent\n" +
      "[+]zone-zone-b degraded: no agent in this zone; its dials go to agents elsewhere\n" +
      "check failed\n",
  );
  await using _route = await startAgent(server, {
    extraArgs: ["--agent-identifiers=default-route=true"],
  });
  await server.agents(2);
  r = await verbose();
  assert.equal(r.status, 200, r.body);
  assert.match(r.body, /\[\+\]strategy-defaultRoute ok: 1 agent\n/);
  assert.equal(await server.status("/readyz"), 200);
});
