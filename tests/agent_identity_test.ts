/**
 * Agent identity through real processes, over both agent links: with `--cluster-ca-cert`, an
 * agent whose certificate another CA signed, or whose certificate has expired, is refused with
 * the reason in the server's log and never registers; an agent with a valid certificate that
 * claims another registered agent's ID or identifiers is refused (`owner` binding); the claim is
 * free again once its holder leaves; `node` binding ties the agent ID to the certificate's node;
 * a server whose agent port authenticates nobody says so at start.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { createSingleUseTunnel } from "@knp/client";
import { type CertBundle, type CertificateAuthority, generateCa } from "../testing/certs.ts";
import { readSample } from "../server/metrics.ts";
import { startHttpBackend } from "./backends.ts";
import {
  AGENT_LINKS,
  type AgentLink,
  type LogRecord,
  type ServerProcess,
  startAgent,
  startServer,
} from "./framework.ts";
import { httpRequest } from "./http_client.ts";

interface IdPki {
  ca: CertificateAuthority;
  dir: string;
  /** Server flags: the agent port's certificate and the CA verifying agents. */
  serverFlags: string[];
  /** Agent flags for a certificate: trust the server, present `bundle`. */
  agentFlags(name: string, bundle: CertBundle): Promise<string[]>;
}

async function idPki(): Promise<IdPki & AsyncDisposable> {
  const ca = await generateCa({ commonName: "identity-test-ca" });
  const dir = await Deno.makeTempDir({ prefix: "knp-identity-" });
  const f = (name: string) => join(dir, name);
  const cluster = await ca.issue({
    commonName: "knp-server",
    dnsNames: ["localhost"],
    ipAddresses: ["127.0.0.1"],
    usage: "server",
  });
  await Deno.writeTextFile(f("ca.crt"), ca.certPem);
  await Deno.writeTextFile(f("cluster.crt"), cluster.certPem);
  await Deno.writeTextFile(f("cluster.key"), cluster.keyPem);
  return {
    ca,
    dir,
    serverFlags: [
      `--cluster-cert=${f("cluster.crt")}`,
      `--cluster-key=${f("cluster.key")}`,
      `--cluster-ca-cert=${f("ca.crt")}`,
    ],
    async agentFlags(name, bundle) {
      await Deno.writeTextFile(f(`${name}.crt`), bundle.certPem);
      await Deno.writeTextFile(f(`${name}.key`), bundle.keyPem);
      return [
        `--ca-cert=${f("ca.crt")}`,
        `--agent-cert=${f(`${name}.crt`)}`,
        `--agent-key=${f(`${name}.key`)}`,
      ];
    },
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true });
    },
  };
}

const client = (ca: CertificateAuthority, commonName: string) =>
  ca.issue({ commonName, usage: "client" });

/** Resolves with the server's next "agent refused" record from `from` on that `match` accepts. */
function refusal(
  server: ServerProcess,
  from: number,
  match: (r: LogRecord) => boolean,
): Promise<LogRecord> {
  return server.process.waitForLog((r) => r.msg === "agent refused" && match(r), { from });
}

/** Count of "agent connected" records (each is one registration). */
function registrations(server: ServerProcess): number {
  return server.process.records.filter((r) => r.msg === "agent connected").length;
}

/** `n` GETs through the server's frontend, each on its own tunnel; their bodies. */
async function getsThrough(server: ServerProcess, address: string, n: number): Promise<string[]> {
  const bodies: string[] = [];
  for (let i = 0; i < n; i++) {
    const tunnel = createSingleUseTunnel({ udsPath: server.udsPath });
    const res = await httpRequest(await tunnel.dial("tcp", address), "GET", "/success");
    await tunnel.done;
    bodies.push(new TextDecoder().decode(res.body));
  }
  return bodies;
}

async function identityScenario(link: AgentLink): Promise<void> {
  await using p = await idPki();
  const other = await generateCa({ commonName: "rogue-ca" });
  const day = 86_400_000;
  await using backend = startHttpBackend();
  await using server = await startServer({ link, extraArgs: p.serverFlags });
  const linkName = link === "grpc" ? "gRPC" : "WebSocket";
  const alice = await startAgent(server, {
    agentId: "a1",
    extraArgs: [
      ...await p.agentFlags("alice", await client(p.ca, "agent-alice")),
      "--agent-identifiers=host=alice-node",
    ],
  });
  await server.agents(1);

  // Another CA's certificate: refused, explained, never registered.
  let from = server.process.mark();
  await using rogueAgent = await startAgent(server, {
    agentId: "a1",
    extraArgs: await p.agentFlags("rogue", await client(other, "rogue")),
    waitReady: false,
  });
  const rogue = await refusal(server, from, (r) => /CN=rogue/.test(String(r.error)));
  assert.equal(rogue.reason, "unauthenticated");
  assert.equal(rogue.link, linkName);
  assert.match(String(rogue.error), /is not signed by --cluster-ca-cert/);
  assert.match(String(rogue.peer), /^127\.0\.0\.1:\d+$/);
  // Stopped, so its retries do not match the waits below.
  await rogueAgent[Symbol.asyncDispose]();

  // An expired certificate from the right CA: refused, with when it expired.
  from = server.process.mark();
  const old = await p.ca.issue({
    commonName: "agent-old",
    usage: "client",
    notBefore: new Date(Date.now() - 2 * day),
    notAfter: new Date(Date.now() - day),
  });
  await using expiredAgent = await startAgent(server, {
    agentId: "a2",
    extraArgs: await p.agentFlags("old", old),
    waitReady: false,
  });
  const expired = await refusal(server, from, (r) => /CN=agent-old/.test(String(r.error)));
  assert.equal(expired.reason, "unauthenticated");
  assert.match(String(expired.error), /expired at \d{4}-\d\d-\d\dT/);
  await expiredAgent[Symbol.asyncDispose]();

  // A valid certificate claiming the registered agent's ID, then its identifier: refused.
  const bobFlags = await p.agentFlags("bob", await client(p.ca, "agent-bob"));
  from = server.process.mark();
  await using bobAsA1 = await startAgent(server, {
    agentId: "a1",
    extraArgs: bobFlags,
    waitReady: false,
  });
  const impersonation = await refusal(server, from, (r) => r.agentID === "a1");
  assert.equal(impersonation.reason, "permission_denied");
  assert.match(
    String(impersonation.error),
    /agent ID "a1" is held by another registered agent \(agent-alice\); this agent is agent-bob/,
  );
  // The refused agent is told why (gRPC status PERMISSION_DENIED, or HTTP 403 on the WebSocket link).
  const told = await bobAsA1.process.waitForLog((r) =>
    /held by another registered agent/.test(JSON.stringify(r))
  );
  assert.match(JSON.stringify(told), link === "grpc" ? /PERMISSION_DENIED|[Pp]ermission/ : /403/);
  from = server.process.mark();
  await using bobAsHost = await startAgent(server, {
    agentId: "b1",
    extraArgs: [...bobFlags, "--agent-identifiers=host=alice-node"],
    waitReady: false,
  });
  const hostClaim = await refusal(server, from, (r) => r.agentID === "b1");
  assert.equal(hostClaim.reason, "permission_denied");
  assert.match(String(hostClaim.error), /host=alice-node is held by another registered agent/);
  await bobAsHost[Symbol.asyncDispose]();

  // Each refusal is counted, by reason and link.
  const metrics = await (await server.health("/metrics")).text();
  const refusals = (reason: string) =>
    readSample(metrics, `knp_server_agent_refusals_total{reason="${reason}",link="${linkName}"}`);
  assert.ok((refusals("unauthenticated") ?? 0) >= 2, metrics);
  assert.ok((refusals("permission_denied") ?? 0) >= 2, metrics);

  // Only alice ever registered, and every dial reaches the backend through her.
  assert.equal(registrations(server), 1);
  assert.deepEqual(await getsThrough(server, backend.address, 8), Array(8).fill("hello"));
  assert.equal(registrations(server), 1);

  // Once alice leaves, her ID is free: bob's retrying agent registers as a1.
  await alice[Symbol.asyncDispose]();
  await server.process.waitForLog(
    (r) => r.msg === "agent connected" && r.agentID === "a1",
    { from: server.process.mark() },
  );
  assert.equal(registrations(server), 2);
}

for (const link of AGENT_LINKS) {
  Deno.test(
    `agent identity (${link}): other-CA, expired and impersonating agents are refused and explained; a released ID can be claimed`,
    () => identityScenario(link),
  );
}

Deno.test("agent identity: --knp-agent-binding=node ties the agent ID to the certificate's node", async () => {
  await using p = await idPki();
  await using server = await startServer({
    extraArgs: [...p.serverFlags, "--knp-agent-binding=node"],
  });
  const nodeCert = await client(p.ca, "system:node:node-1");
  await using _node = await startAgent(server, {
    agentId: "node-1",
    extraArgs: [...await p.agentFlags("node", nodeCert), "--agent-identifiers=host=node-1"],
  });
  await server.agents(1);
  let from = server.process.mark();
  await using _wrongId = await startAgent(server, {
    agentId: "node-2",
    extraArgs: await p.agentFlags("node-b", await client(p.ca, "system:node:node-3")),
    waitReady: false,
  });
  const wrong = await refusal(server, from, (r) => r.agentID === "node-2");
  assert.equal(wrong.reason, "permission_denied");
  assert.match(String(wrong.error), /agent ID "node-2" is not the credential's node "node-3"/);
  from = server.process.mark();
  await using _noNode = await startAgent(server, {
    agentId: "plain",
    extraArgs: await p.agentFlags("plain", await client(p.ca, "agent-plain")),
    waitReady: false,
  });
  const plain = await refusal(server, from, (r) => r.agentID === "plain");
  assert.match(String(plain.error), /names no node/);
  assert.equal(registrations(server), 1);
});

Deno.test("agent identity: an agent port without client authentication is named at start", async () => {
  await using server = await startServer({ extraArgs: ["--cluster-ca-cert="] });
  const warn = server.process.records.find((r) =>
    r.level === "warn" && /the agent port authenticates no agent/.test(String(r.msg))
  );
  assert.ok(warn, `no start-up WARN about the open agent port:\n${server.process.log}`);
  assert.match(String(warn.msg), /--cluster-ca-cert .*--agent-namespace/);
  // And with a CA there is no such line.
  await using closed = await startServer();
  assert.ok(
    !closed.process.records.some((r) => /authenticates no agent/.test(String(r.msg))),
    "a server with --cluster-ca-cert warned about an open agent port",
  );
});

for (const link of AGENT_LINKS) {
  Deno.test(`agent connect rate (${link}): an agent over it is refused with a retry hint it honours`, async () => {
    // One handshake per 1000 s, burst 1: the first agent is admitted, the next one is not.
    await using server = await startServer({
      link,
      extraArgs: ["--knp-agent-connect-rate=0.001", "--knp-agent-connect-burst=1"],
    });
    await using _first = await startAgent(server, { agentId: "first" });
    await server.agents(1);
    const from = server.process.mark();
    await using second = await startAgent(server, { agentId: "second", waitReady: false });
    const refused = await refusal(server, from, (r) => r.agentID === "second");
    assert.equal(refused.reason, "throttled");
    assert.match(String(refused.error), /too many agents connecting; retry after \d+ms/);
    const told = await second.process.waitForLog((r) => r.msg === "cannot connect to proxy server");
    const hint = Number(told.serverRetryAfterMs);
    assert.ok(hint > 900_000, `retry hint ${hint} ms, expected about 1000 s`);
    assert.ok(Number(told.retryInMs) >= hint * 0.5, `the agent retries in ${told.retryInMs} ms`);
    assert.equal(registrations(server), 1);
  });
}
