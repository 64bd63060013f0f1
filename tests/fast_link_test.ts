// deno-lint-ignore-file no-console -- reports skipped groups
/**
 * The fast link between real knp processes (issue 14 item 3): with default flags a knp agent's
 * gRPC connection to a knp server is switched to the WebSocket agent link on the agent port;
 * `--knp-fast-link=false` on either side keeps it on gRPC; upstream's binaries on either side see
 * plain gRPC. Dials go through both frontends (gRPC on the UDS, HTTP-CONNECT) byte-exact.
 *
 * The mixed-fleet tests need upstream's binaries: `KNP_UPSTREAM_SERVER` (proxy-server) and
 * `KNP_UPSTREAM_AGENT` (proxy-agent), absolute paths; the test of an unset one is ignored. The
 * test of two servers behind one address needs haproxy.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createSingleUseTunnel } from "@knp/client";
import {
  checksum,
  firstMismatch,
  type HttpBackend,
  pattern,
  startHttpBackend,
} from "./backends.ts";
import { endpointOf, tunnel } from "./connect_client.ts";
import {
  type AgentProcess,
  type LogRecord,
  type ServerProcess,
  startAgent,
  startServer,
} from "./framework.ts";
import { awaitHeld, startUpstreamAgent, startUpstreamServer, UPSTREAM } from "./ha/fleet.ts";
import { haveHaproxy, startHaproxy } from "./ha/haproxy.ts";
import { type ByteConn, httpRequest } from "./http_client.ts";

const MiB = 1 << 20;
const decoder = new TextDecoder();
const HAPROXY = await haveHaproxy();

if (!UPSTREAM.server) {
  console.log("skipping 'knp agent → upstream server': KNP_UPSTREAM_SERVER is not set");
}
if (!UPSTREAM.agent) {
  console.log("skipping 'upstream agent → knp server': KNP_UPSTREAM_AGENT is not set");
}
if (!HAPROXY) console.log("skipping the two-server fast link test: haproxy is not on PATH");

/** The link of the agent's first server connection, from its "connected to proxy server". */
async function agentLink(agent: AgentProcess): Promise<unknown> {
  return (await agent.process.waitForLog("connected to proxy server")).link;
}

/** The server's "agent connected" record (a WebSocket link's peer is `ws:host:port`). */
function serverSaw(server: ServerProcess): Promise<LogRecord> {
  return server.process.waitForLog("agent connected");
}

/** A 4 MiB download and a 4 MiB upload over `open()`'s connections, checked byte for byte. */
async function byteExact(open: () => Promise<ByteConn>): Promise<void> {
  const down = await httpRequest(await open(), "GET", `/download?chunks=4&size=${MiB}`);
  assert.equal(down.status, 200);
  assert.equal(down.body.length, 4 * MiB);
  assert.equal(firstMismatch(down.body), -1);
  const body = pattern(0, 4 * MiB);
  const sum = checksum(body);
  const up = await httpRequest(await open(), "POST", "/upload", body);
  assert.equal(decoder.decode(up.body), `${body.length} ${sum.a}:${sum.b}`);
}

/** Byte-exact transfers through a gRPC-mode server's UDS frontend. */
function throughGrpc(udsPath: string, backend: HttpBackend): Promise<void> {
  return byteExact(() => createSingleUseTunnel({ udsPath }).dial("tcp", backend.address));
}

/** Byte-exact transfers through an HTTP-CONNECT-mode server's frontend. */
async function throughHttpConnect(server: ServerProcess, backend: HttpBackend): Promise<void> {
  const endpoint = await endpointOf(server);
  await byteExact(async () => (await tunnel(endpoint, backend.address)).asByteConn());
}

for (const mode of ["grpc", "http-connect"] as const) {
  Deno.test(`fast link (${mode} frontend): default flags put a knp agent on the WebSocket link`, async () => {
    await using backend = startHttpBackend();
    await using server = await startServer({ extraArgs: [`--mode=${mode}`] });
    await using agent = await startAgent(server, { negotiated: true });
    assert.equal(await agentLink(agent), "websocket");
    assert.match(String((await serverSaw(server)).peer), /^ws:127\.0\.0\.1:\d+$/);
    const agentLine = agent.process.records.find((r) => r.msg === "agent link");
    assert.equal(agentLine?.link, "negotiated");
    if (mode === "grpc") await throughGrpc(server.udsPath, backend);
    else await throughHttpConnect(server, backend);
    // The switch happened without a detour: no fallback to gRPC.
    assert.ok(!agent.process.log.includes("retrying over gRPC"), agent.process.log);
  });
}

Deno.test("fast link: --knp-fast-link=false on the agent keeps it on gRPC", async () => {
  await using backend = startHttpBackend();
  await using server = await startServer();
  await using agent = await startAgent(server, {
    negotiated: true,
    extraArgs: ["--knp-fast-link=false"],
  });
  assert.equal(await agentLink(agent), "grpc");
  assert.doesNotMatch(String((await serverSaw(server)).peer), /^ws:/);
  assert.equal(agent.process.records.find((r) => r.msg === "agent link")?.link, "grpc");
  await throughGrpc(server.udsPath, backend);
});

Deno.test("fast link: --knp-fast-link=false on the server ignores the agent's offer", async () => {
  await using backend = startHttpBackend();
  await using server = await startServer({ extraArgs: ["--knp-fast-link=false"] });
  await using agent = await startAgent(server, { negotiated: true });
  assert.equal(await agentLink(agent), "grpc");
  assert.doesNotMatch(String((await serverSaw(server)).peer), /^ws:/);
  assert.ok(!agent.process.log.includes("retrying over gRPC"), "the offer was ignored, not failed");
  await throughGrpc(server.udsPath, backend);
});

Deno.test({
  name: "fast link: a knp agent with default flags stays on gRPC with an upstream server",
  ignore: !UPSTREAM.server,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using backend = startHttpBackend();
    await using server = await startUpstreamServer("upstream-server");
    await using agent = await startAgent(server.agentPort, { negotiated: true });
    assert.equal(await agentLink(agent), "grpc");
    assert.ok(!agent.process.log.includes("retrying over gRPC"), agent.process.log);
    await throughGrpc(server.udsPath, backend);
  },
});

Deno.test({
  name: "fast link: an upstream agent registers over gRPC with a knp server with default flags",
  ignore: !UPSTREAM.agent,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using backend = startHttpBackend();
    await using server = await startServer();
    await using _agent = await startUpstreamAgent(server.agentPort);
    await server.agents(1);
    assert.doesNotMatch(String((await serverSaw(server)).peer), /^ws:/);
    await throughGrpc(server.udsPath, backend);
  },
});

Deno.test({
  name: "fast link: two knp servers behind one haproxy address; the agent holds both over " +
    "WebSocket links",
  ignore: !HAPROXY,
  async fn() {
    await using backend = startHttpBackend();
    const fleet = (id: string) => ["--server-count=2", `--server-id=${id}`];
    await using s1 = await startServer({ extraArgs: fleet("s1") });
    await using s2 = await startServer({ extraArgs: fleet("s2") });
    await using lb = await startHaproxy([
      { name: "s1", port: s1.agentPort },
      { name: "s2", port: s2.agentPort },
    ]);
    await using agent = await startAgent(lb.ports[0]!, { negotiated: true });
    await awaitHeld(agent.process, ["s1", "s2"]);
    const links = agent.process.records
      .filter((r) => r.msg === "connected to proxy server")
      .map((r) => r.link);
    assert.deepEqual([...new Set(links)], ["websocket"]);
    for (const s of [s1, s2]) {
      assert.match(String((await serverSaw(s)).peer), /^ws:/);
      await throughGrpc(s.udsPath, backend);
    }
  },
});
