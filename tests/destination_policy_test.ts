/**
 * The destination policy at both ends, against real proxy-server and proxy-agent processes:
 * the server keeps both frontends (gRPC and HTTP-CONNECT) off its own ports by default and
 * applies `--knp-destination-deny`; the agent applies `--knp-allow-destinations` and the
 * hardened preset before opening any socket. Every denial fails with kind `policy-denied`
 * (HTTP 403) and writes one audit line.
 */

import assert from "node:assert/strict";
import { createTunnel, DialError, type Tunnel } from "@knp/client";
import { startHttpBackend } from "./backends.ts";
import { connect, connectHead, endpointOf, tunnel as connectTunnel } from "./connect_client.ts";
import {
  AGENT_LINKS,
  type LogRecord,
  type ManagedProcess,
  startAgent,
  startServer,
} from "./framework.ts";
import { httpRequest } from "./http_client.ts";

const DENIED = "dial denied by destination policy";
const decoder = new TextDecoder();

/** Resolves with the `n`th deny audit record from `from` on. */
function nthDenial(process: ManagedProcess, n: number, from: number): Promise<LogRecord> {
  return process.waitForState((records) => {
    const denials = records.slice(from).filter((r) => r.msg === DENIED);
    return denials.length >= n ? denials[n - 1] : undefined;
  }, `${n} "${DENIED}" record(s)`);
}

/** The deny audit records from `from` on. */
function denials(process: ManagedProcess, from: number): LogRecord[] {
  return process.records.slice(from).filter((r) => r.msg === DENIED);
}

/** Dials and expects a DialError; returns it. */
async function deniedDial(tunnel: Tunnel, address: string): Promise<DialError> {
  const err = await tunnel.dial("tcp", address, { timeoutMs: 10_000 }).then(
    (conn) => {
      conn.close();
      throw new Error(`dial to ${address} was allowed`);
    },
    (e: unknown) => e,
  );
  assert.ok(err instanceof DialError, String(err));
  return err;
}

/** GET /success through `tunnel` to `address`; the body. */
async function get(tunnel: Tunnel, address: string): Promise<string> {
  const conn = await tunnel.dial("tcp", address, { timeoutMs: 10_000 });
  try {
    return decoder.decode((await httpRequest(conn, "GET", "/success")).body);
  } finally {
    conn.close();
  }
}

/** An HTTP server answering "hello" on `hostname` (any loopback address) and `port` (0: any). */
function helloOn(hostname: string, port = 0): { address: string; port: number } & AsyncDisposable {
  const server = Deno.serve({ hostname, port, onListen() {} }, () => new Response("hello"));
  return {
    address: `${hostname}:${server.addr.port}`,
    port: server.addr.port,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

Deno.test("gRPC frontend: the server's own ports are denied by default, a backend works", async () => {
  await using backend = startHttpBackend();
  await using server = await startServer();
  await using agent = await startAgent(server);
  await using tunnel = createTunnel({ udsPath: server.udsPath, userAgent: "policy-test" });
  const from = server.process.mark();
  const agentFrom = agent.process.mark();

  const admin = await deniedDial(tunnel, `127.0.0.1:${server.adminPort}`);
  assert.equal(admin.kind, "policy-denied", admin.message);
  assert.equal(admin.serverId, "test-server");
  assert.equal(admin.agentId, undefined, "the server denied it, no agent was asked");
  // The framework binds the server on 127.0.0.1: the rule names that address.
  assert.match(admin.message, /denied by destination policy \(rule "127\.0\.0\.1:[0-9|]+"/);
  // Other spellings of it, and the agent port, are denied too.
  for (const address of [`localhost:${server.healthPort}`, `127.1:${server.agentPort}`]) {
    assert.equal((await deniedDial(tunnel, address)).kind, "policy-denied", address);
  }
  assert.equal(await get(tunnel, backend.address), "hello");
  // The same port on another loopback address is someone else's socket: reachable.
  await using neighbour = helloOn("127.0.1.14", server.agentPort);
  assert.equal(await get(tunnel, neighbour.address), "hello");
  const last = await deniedDial(tunnel, `0.0.0.0:${server.healthPort}`);
  assert.equal(last.kind, "policy-denied");

  const audit = await nthDenial(server.process, 4, from);
  assert.equal(audit["address"], `0.0.0.0:${server.healthPort}`);
  assert.equal(denials(server.process, from).length, 4, "one audit line per denial, none else");
  const first = denials(server.process, from)[0]!;
  assert.equal(first["decision"], "deny");
  assert.equal(first["address"], `127.0.0.1:${server.adminPort}`);
  assert.equal(first["ruleSource"], "self");
  // The audit line carries what the server received: the native client sends the caller's
  // user-agent, grpc-js (`grpcTransport: "grpc-js"`) its own.
  assert.match(String(first["userAgent"]), /policy-test|grpc-node-js/);
  assert.equal(typeof first["peer"], "string");
  assert.deepEqual(denials(agent.process, agentFrom), [], "the agent never saw the denied dials");
});

Deno.test("--knp-destination-deny-self=false leaves the server's ports reachable", async () => {
  await using server = await startServer({ extraArgs: ["--knp-destination-deny-self=false"] });
  await using _agent = await startAgent(server);
  await using tunnel = createTunnel({ udsPath: server.udsPath });
  const conn = await tunnel.dial("tcp", `127.0.0.1:${server.healthPort}`, { timeoutMs: 10_000 });
  const res = await httpRequest(conn, "GET", "/healthz");
  conn.close();
  assert.equal(res.status, 200);
});

Deno.test("HTTP-CONNECT frontend: 403 for the server's ports and a deny rule; 200 for a backend", async () => {
  await using backend = startHttpBackend();
  await using denied = startHttpBackend();
  await using server = await startServer({
    extraArgs: ["--mode=http-connect", `--knp-destination-deny=${denied.address}`],
  });
  await using _agent = await startAgent(server);
  const endpoint = await endpointOf(server);
  const from = server.process.mark();

  const head = connectHead(`127.0.0.1:${server.healthPort}`).replace(
    "\r\n\r\n",
    "\r\nUser-Agent: connect-test\r\n\r\n",
  );
  const self = await connect(endpoint, "", { head, timeoutMs: 10_000 });
  assert.equal(self.head.status, 403, self.head.raw);
  assert.match(self.head.raw, /^HTTP\/1\.1 403 Forbidden: dial tcp 127\.0\.0\.1:\d+: denied by/);
  assert.equal(self.head.headers["x-knp-error-kind"], "policy-denied");
  assert.match(self.body, /^kind: policy-denied$/m);

  const conn = await connectTunnel(endpoint, backend.address);
  const res = await httpRequest(conn.asByteConn(), "GET", "/success");
  conn.close();
  assert.equal(decoder.decode(res.body), "hello");

  const ruled = await connect(endpoint, denied.address, { timeoutMs: 10_000 });
  assert.equal(ruled.head.status, 403, ruled.head.raw);
  assert.match(ruled.body, /--knp-destination-deny/);

  const audit = await nthDenial(server.process, 2, from);
  assert.equal(audit["rule"], denied.address);
  assert.equal(audit["ruleSource"], "--knp-destination-deny");
  const records = denials(server.process, from);
  assert.equal(records.length, 2);
  assert.equal(records[0]!["userAgent"], "connect-test");
  assert.equal(records[0]!["decision"], "deny");
});

for (const link of AGENT_LINKS) {
  Deno.test(`[${link}] agent allow-list: other destinations fail with policy-denied`, async () => {
    await using allowed = startHttpBackend();
    await using other = startHttpBackend();
    await using server = await startServer({ link });
    await using agent = await startAgent(server, {
      agentId: "policy-agent",
      extraArgs: [`--knp-allow-destinations=${allowed.address}`],
    });
    await using tunnel = createTunnel({ udsPath: server.udsPath });
    const from = agent.process.mark();

    const err = await deniedDial(tunnel, other.address);
    assert.equal(err.kind, "policy-denied", err.message);
    assert.equal(err.agentId, "policy-agent", "the agent denied it");
    assert.match(err.message, /denied by destination policy \(rule "\(not in allow list\)"/);
    assert.equal(await get(tunnel, allowed.address), "hello");
    const audit = await nthDenial(agent.process, 1, from);
    assert.equal(audit["address"], other.address);
    assert.equal(audit["decision"], "deny");
    assert.equal(audit["serverID"], "test-server");
    assert.equal(denials(agent.process, from).length, 1);
    assert.deepEqual(denials(server.process, 0), [], "the server let the dial through");
  });
}

Deno.test("hardened preset: kubelet port on the node IP and the pod CIDR only", async () => {
  await using kubelet = helloOn("127.0.0.1");
  await using otherNodePort = helloOn("127.0.0.1");
  await using pod = helloOn("127.0.1.5");
  await using outside = helloOn("127.0.2.5");
  await using server = await startServer();
  await using agent = await startAgent(server, {
    extraArgs: [
      "--knp-destination-preset=hardened",
      "--agent-identifiers=ipv4=127.0.0.1&host=node-a",
      `--knp-kubelet-port=${kubelet.port}`,
      "--knp-pod-cidr=127.0.1.0/24",
      "--knp-service-cidr=127.0.3.0/24",
    ],
  });
  await using tunnel = createTunnel({ udsPath: server.udsPath });
  const from = agent.process.mark();

  assert.equal(await get(tunnel, kubelet.address), "hello");
  assert.equal(await get(tunnel, pod.address), "hello");
  for (const address of [otherNodePort.address, outside.address]) {
    assert.equal((await deniedDial(tunnel, address)).kind, "policy-denied", address);
  }
  await nthDenial(agent.process, 2, from);
  assert.deepEqual(denials(agent.process, from).map((r) => r["address"]), [
    otherNodePort.address,
    outside.address,
  ]);
});
