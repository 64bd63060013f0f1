/**
 * Egress the way networks really are (issue 12 item 4), with real processes and a small CONNECT
 * proxy of our own (tests/connect_proxy.ts) on loopback:
 * - the agent dials destinations through the proxy (flags or `HTTPS_PROXY`), minus `NO_PROXY`;
 * - the agent's WebSocket link to the server goes through the proxy (TLS inside the tunnel);
 * - a refusal by the proxy fails the dial with the proxy's status, as a dial error;
 * - the server dials `--knp-direct-destinations` itself: the agent never sees those dials.
 */

import assert from "node:assert/strict";
import { createSingleUseTunnel, DialError } from "@knp/client";
import { checksum, firstMismatch, pattern, startHttpBackend } from "./backends.ts";
import { startConnectProxy } from "./connect_proxy.ts";
import {
  agentArgs,
  ManagedProcess,
  type ServerProcess,
  startAgent,
  startServer,
  testPki,
} from "./framework.ts";
import { httpRequest } from "./http_client.ts";
import { connect, endpointOf, tunnel } from "./connect_client.ts";
import { agentPermissionFlags } from "../agent/permissions.ts";
import { proxyDialer } from "../agent/egress_proxy.ts";
import { EndpointDialError } from "../agent/dialer.ts";
import { parseProxyUrl } from "../transport/http_proxy.ts";
import { nullLogger } from "../core/log.ts";

async function getThrough(server: ServerProcess, address: string): Promise<string> {
  const conn = await createSingleUseTunnel({ udsPath: server.udsPath }).dial("tcp", address);
  return new TextDecoder().decode((await httpRequest(conn, "GET", "/success")).body);
}

function dialFailure(server: ServerProcess, address: string): Promise<unknown> {
  return createSingleUseTunnel({ udsPath: server.udsPath }).dial("tcp", address).then(
    () => assert.fail(`the dial to ${address} should fail`),
    (err: unknown) => err,
  );
}

Deno.test("egress: the agent dials through --knp-egress-proxy, except --knp-egress-no-proxy", async () => {
  await using proxy = startConnectProxy();
  await using viaProxy = startHttpBackend();
  await using bypassed = startHttpBackend();
  await using server = await startServer();
  await using _agent = await startAgent(server, {
    extraArgs: [`--knp-egress-proxy=${proxy.url}`, `--knp-egress-no-proxy=${bypassed.address}`],
  });
  assert.equal(await getThrough(server, viaProxy.address), "hello");
  assert.deepEqual(proxy.targets, [viaProxy.address]);
  assert.equal(proxy.served, 1);
  assert.equal(await getThrough(server, bypassed.address), "hello");
  assert.deepEqual(proxy.targets, [viaProxy.address], "the bypassed dial must not reach the proxy");
});

Deno.test("egress: HTTPS_PROXY/NO_PROXY carry the WebSocket link and the dials", async () => {
  await using proxy = startConnectProxy();
  await using viaProxy = startHttpBackend();
  await using bypassed = startHttpBackend();
  await using server = await startServer({ link: "websocket" });
  const { files } = await testPki();
  const flags = agentArgs(server.agentPort, server.websocketPort, files, "env-agent");
  // The computed permissions must let the agent read the variables.
  const args = ["run", ...agentPermissionFlags(flags), "agent/main.ts", ...flags];
  await using agent = new ManagedProcess("agent", args, {
    HTTPS_PROXY: proxy.url,
    NO_PROXY: `example.invalid, ${bypassed.address}`,
    // Deno's own update check (dl.deno.land) honours HTTPS_PROXY too: not the agent's traffic.
    DENO_NO_UPDATE_CHECK: "1",
  });
  await agent.waitForLog("connected to proxy server");
  const link = `127.0.0.1:${server.websocketPort}`;
  assert.equal(proxy.targets[0], link, "the link goes through the proxy first");
  assert.match(agent.log, /"egress through an HTTP proxy".*"source":"HTTPS_PROXY"/);
  // The agent may open more links (probes, reconnects): count the dials apart from them.
  const dials = () => proxy.targets.filter((target) => target !== link);
  assert.deepEqual(dials(), []);
  assert.equal(await getThrough(server, viaProxy.address), "hello");
  assert.deepEqual(dials(), [viaProxy.address]);
  assert.equal(await getThrough(server, bypassed.address), "hello");
  assert.deepEqual(dials(), [viaProxy.address]);
});

Deno.test("egress: a proxy refusing the WebSocket link is named in the agent's log", async () => {
  await using proxy = startConnectProxy();
  proxy.refuse = { status: 407, reason: "Proxy Authentication Required" };
  await using server = await startServer({ link: "websocket" });
  await using agent = await startAgent(server, {
    extraArgs: [`--knp-egress-proxy=${proxy.url}`],
    waitReady: false,
  });
  const record = await agent.process.waitForLog("cannot connect to proxy server");
  assert.match(
    String(record.error),
    new RegExp(
      `proxy ${proxy.url.replaceAll(".", "\\.")} refused CONNECT 127\\.0\\.0\\.1:` +
        `${server.websocketPort}: 407 Proxy Authentication Required`,
    ),
  );
  // Served again: the agent gets in through the proxy on its next attempt.
  proxy.refuse = undefined;
  await agent.ready();
  assert.ok(proxy.served >= 1);
});

Deno.test("egress: the gRPC link goes through grpc-js's own https_proxy support", async () => {
  await using proxy = startConnectProxy();
  await using server = await startServer();
  const { files } = await testPki();
  const flags = agentArgs(server.agentPort, 0, files, "grpc-env-agent");
  const args = ["run", ...agentPermissionFlags(flags), "agent/main.ts", ...flags];
  // Lower case: grpc-js reads only that spelling (the agent's own egress reads both).
  await using agent = new ManagedProcess("agent", args, {
    https_proxy: proxy.url,
    DENO_NO_UPDATE_CHECK: "1",
  });
  await agent.waitForLog("connected to proxy server");
  assert.equal(proxy.targets[0], `127.0.0.1:${server.agentPort}`);
});

Deno.test("egress: a refusal by the proxy fails the dial with its status, credentials are sent", async () => {
  await using proxy = startConnectProxy();
  await using backend = startHttpBackend();
  await using server = await startServer();
  const url = `http://us%3Aer:p%40ss@127.0.0.1:${proxy.port}`;
  proxy.requireAuthorization = `Basic ${btoa("us:er:p@ss")}`;
  await using _agent = await startAgent(server, { extraArgs: [`--knp-egress-proxy=${url}`] });
  assert.equal(await getThrough(server, backend.address), "hello");
  assert.deepEqual(proxy.authorizations, [proxy.requireAuthorization]);
  proxy.refuse = { status: 403, reason: "Forbidden" };
  const err = await dialFailure(server, backend.address);
  assert.ok(err instanceof DialError, String(err));
  assert.equal(err.kind, "dial-refused");
  assert.match(
    err.message,
    new RegExp(
      `proxy http://127\\.0\\.0\\.1:${proxy.port} refused CONNECT ${backend.address}: 403 Forbidden`,
    ),
  );
  assert.doesNotMatch(err.message, /p@ss|p%40ss/, "credentials must not leak into errors");
});

Deno.test("egress: the proxy dialer reports a 407, a silent and an unreachable proxy as dial errors", async () => {
  await using proxy = startConnectProxy();
  proxy.requireAuthorization = "Basic nope";
  const dial = proxyDialer(
    { proxy: parseProxyUrl(proxy.url, "test"), noProxy: [], source: "test" },
    nullLogger,
  );
  const err = await dial("tcp", "127.0.0.1:9", { timeoutMs: 5_000 }).catch((e) => e);
  assert.ok(err instanceof EndpointDialError, String(err));
  assert.equal(err.kind, "dial-refused");
  assert.match(
    err.message,
    /^dial tcp 127\.0\.0\.1:9: proxy .* refused CONNECT 127\.0\.0\.1:9: 407 Proxy Authentication Required$/,
  );

  // A proxy that accepts and never answers: the dial's deadline ends it as a timeout.
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = silent.accept();
  const silentUrl = `http://127.0.0.1:${(silent.addr as Deno.NetAddr).port}`;
  const slow = proxyDialer(
    { proxy: parseProxyUrl(silentUrl, "test"), noProxy: [], source: "test" },
    nullLogger,
  );
  const timedOut = await slow("tcp", "10.0.0.1:443", { timeoutMs: 300 }).catch((e) => e);
  assert.ok(timedOut instanceof EndpointDialError, String(timedOut));
  assert.equal(timedOut.kind, "dial-timeout");
  assert.match(timedOut.message, /^dial tcp 10\.0\.0\.1:443: i\/o timeout \(waiting for proxy /);
  (await accepted).close();
  silent.close();

  // Nothing listens on the proxy's address any more: the dial fails as "proxyconnect".
  const closed = startConnectProxy();
  const closedUrl = closed.url;
  await closed[Symbol.asyncDispose]();
  const gone = proxyDialer(
    { proxy: parseProxyUrl(closedUrl, "test"), noProxy: [], source: "test" },
    nullLogger,
  );
  const refused = await gone("tcp", "10.0.0.1:443", { timeoutMs: 5_000 }).catch((e) => e);
  assert.ok(refused instanceof EndpointDialError);
  assert.equal(refused.kind, "dial-refused");
  assert.match(
    refused.message,
    /^dial tcp 10\.0\.0\.1:443: proxyconnect tcp: dial tcp 127\.0\.0\.1:\d+: connect: connection refused$/,
  );
});

Deno.test("egress: bytes that arrive with the proxy's 200 are the destination's first bytes", async () => {
  // A proxy that answers and sends the destination's banner in the same write.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    const conn = await listener.accept();
    const head = new Uint8Array(1024);
    let text = "";
    while (!text.includes("\r\n\r\n")) {
      const n = await conn.read(head);
      if (n === null) break;
      text += new TextDecoder().decode(head.subarray(0, n));
    }
    await conn.write(new TextEncoder().encode("HTTP/1.1 200 OK\r\n\r\nSSH-2.0-banner\r\n"));
    conn.close();
    return text;
  })();
  const url = `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`;
  const dial = proxyDialer(
    { proxy: parseProxyUrl(url, "t"), noProxy: [], source: "t" },
    nullLogger,
  );
  const socket = await dial("tcp", "[fd00::1]:22", { timeoutMs: 5_000 });
  const buffer = new Uint8Array(64);
  const n = await socket.read(buffer);
  assert.equal(new TextDecoder().decode(buffer.subarray(0, n ?? 0)), "SSH-2.0-banner\r\n");
  assert.equal(await socket.read(buffer), null);
  socket.close();
  assert.match(await served, /^CONNECT \[fd00::1\]:22 HTTP\/1\.1\r\nHost: \[fd00::1\]:22\r\n\r\n$/);
  listener.close();
});

Deno.test("egress: the agent's destination policy is checked before the proxy is contacted", async () => {
  await using proxy = startConnectProxy();
  await using backend = startHttpBackend();
  await using server = await startServer();
  await using _agent = await startAgent(server, {
    extraArgs: [`--knp-egress-proxy=${proxy.url}`, `--knp-deny-destinations=${backend.address}`],
  });
  const err = await dialFailure(server, backend.address);
  assert.ok(err instanceof DialError, String(err));
  assert.equal(err.kind, "policy-denied");
  assert.deepEqual(proxy.targets, [], "a denied dial must not reach the proxy");
});

Deno.test("direct: the server dials --knp-direct-destinations itself; others go to the agent", async () => {
  await using proxy = startConnectProxy();
  await using direct = startHttpBackend();
  await using viaAgent = startHttpBackend();
  await using server = await startServer({
    extraArgs: ["--v=5", `--knp-direct-destinations=${direct.address}`],
  });
  // With no agent at all, the direct destination is reachable and the others are not.
  assert.equal(await getThrough(server, direct.address), "hello");
  const noAgent = await dialFailure(server, viaAgent.address);
  assert.ok(noAgent instanceof DialError && noAgent.kind === "no-agent", String(noAgent));
  const record = await server.process.waitForLog((r) =>
    String(r.msg).startsWith("direct dial:") && r.address === direct.address
  );
  assert.equal(typeof record.dialID, "string", JSON.stringify(record));

  // An agent whose dials all go through our proxy: the proxy sees every dial the agent makes.
  await using _agent = await startAgent(server, { extraArgs: [`--knp-egress-proxy=${proxy.url}`] });
  assert.equal(await getThrough(server, direct.address), "hello");
  assert.equal(await getThrough(server, viaAgent.address), "hello");
  assert.deepEqual(proxy.targets, [viaAgent.address], "the agent never sees the direct dial");
});

Deno.test("direct: 8 MiB each way through a direct dial arrive intact", async () => {
  await using backend = startHttpBackend();
  await using server = await startServer({
    extraArgs: [`--knp-direct-destinations=${backend.address}`],
  });
  const tunnelTo = () =>
    createSingleUseTunnel({ udsPath: server.udsPath }).dial("tcp", backend.address);
  const down = await httpRequest(await tunnelTo(), "GET", "/download?chunks=8&size=1048576");
  assert.equal(down.body.length, 8 << 20);
  assert.equal(firstMismatch(down.body), -1);
  const body = pattern(0, 8 << 20);
  const up = await httpRequest(await tunnelTo(), "POST", "/upload", body);
  const sum = checksum(body);
  assert.equal(new TextDecoder().decode(up.body), `${8 << 20} ${sum.a}:${sum.b}`);
});

Deno.test("direct: works on the HTTP-CONNECT frontend; a refused direct dial says so", async () => {
  await using direct = startHttpBackend();
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closedAddress = `127.0.0.1:${(closed.addr as Deno.NetAddr).port}`;
  closed.close();
  await using server = await startServer({
    frontend: "tcp",
    extraArgs: [
      "--mode=http-connect",
      `--knp-direct-destinations=${direct.address},${closedAddress}`,
    ],
  });
  const endpoint = await endpointOf(server);
  await using conn = await tunnel(endpoint, direct.address);
  const res = await httpRequest(conn.asByteConn(), "GET", "/success");
  assert.equal(new TextDecoder().decode(res.body), "hello");
  const refused = await connect(endpoint, closedAddress);
  assert.equal(refused.head.status, 502, JSON.stringify(refused.head));
  assert.match(refused.body, /connection refused/);
  assert.match(refused.body, /agent: direct/);
});

Deno.test("direct: the destination policy applies before a direct dial", async () => {
  await using direct = startHttpBackend();
  await using server = await startServer({
    extraArgs: [
      `--knp-direct-destinations=${direct.address}`,
      `--knp-destination-deny=${direct.address}`,
    ],
  });
  const err = await dialFailure(server, direct.address);
  assert.ok(err instanceof DialError, String(err));
  assert.equal(err.kind, "policy-denied");
});
