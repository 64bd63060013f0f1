// deno-lint-ignore-file no-console -- reports skipped tests
/**
 * Upstream's integration scenarios against real proxy-server and proxy-agent processes, on a UDS
 * and on TCP with mTLS, with our client library as the frontend.
 */

import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { createSingleUseTunnel, createTunnel, DialError } from "@knp/client";
import { readSample } from "../server/metrics.ts";
import {
  checksum,
  firstMismatch,
  pattern,
  readExactly,
  startEchoBackend,
  startHttpBackend,
} from "./backends.ts";
import { havePython, startBlackhole } from "./connect_client.ts";
import {
  AGENT_LINKS,
  type AgentLink,
  awaitTables,
  CLOSED_PORT,
  httpStatus,
  type ServerProcess,
  startAgent,
  startServer,
} from "./framework.ts";
import { agentPortClient, frontendClient, rawBidiStream } from "./grpc_raw.ts";
import { httpRequest } from "./http_client.ts";

async function metric(server: ServerProcess, series: string): Promise<number | undefined> {
  const res = await server.health("/metrics");
  return readSample(await res.text(), series);
}

async function tcpTunnelOptions(server: ServerProcess) {
  return {
    address: `127.0.0.1:${server.serverPort}`,
    tls: {
      ca: await Deno.readTextFile(server.pki.caCert),
      cert: await Deno.readTextFile(server.pki.clientCert),
      key: await Deno.readTextFile(server.pki.clientKey),
    },
  };
}

if (!havePython) console.log("skipping the pending-dial tests: python3 is not on PATH");

/** An echo backend, a server, an agent and one tunneled connection to the echo backend. */
async function echoThroughTunnel(link: AgentLink = "grpc") {
  await using stack = new AsyncDisposableStack();
  const echo = stack.use(startEchoBackend());
  const server = stack.use(await startServer({ link }));
  stack.use(await startAgent(server));
  const tunnel = stack.use(createTunnel({ udsPath: server.udsPath }));
  const conn = await tunnel.dial("tcp", echo.address);
  const resources = stack.move();
  return {
    server,
    conn,
    writer: conn.writable.getWriter(),
    reader: conn.readable.getReader(),
    pending: { rest: new Uint8Array() },
    [Symbol.asyncDispose]: () => resources.disposeAsync(),
  };
}

// Every scenario runs over both agent links: upstream's gRPC and knp's WebSocket link.
for (const link of AGENT_LINKS) {
  Deno.test(`[${link}] GET through a single-use tunnel over the UDS frontend`, async () => {
    await using backend = startHttpBackend();
    // Debug level logs the connection tables' changes.
    await using server = await startServer({ link, extraArgs: ["--v=5"] });
    await using _agent = await startAgent(server);
    const from = server.process.mark();
    const tunnel = createSingleUseTunnel({ udsPath: server.udsPath });
    const conn = await tunnel.dial("tcp", backend.address);
    const res = await httpRequest(conn, "GET", "/success");
    assert.equal(res.status, 200);
    assert.equal(new TextDecoder().decode(res.body), "hello");
    await tunnel.done;
    await awaitTables(server.process, (g) => g.established === 0, "the tunnel to end", { from });
    assert.equal(
      await metric(server, "konnectivity_network_proxy_server_established_connections"),
      0,
    );
  });

  Deno.test(
    `[${link}] GET through the TCP frontend with mTLS; a client without a certificate is refused`,
    async () => {
      await using backend = startHttpBackend();
      await using server = await startServer({ frontend: "tcp", link });
      await using _agent = await startAgent(server);
      const options = await tcpTunnelOptions(server);
      const tunnel = createSingleUseTunnel(options);
      const res = await httpRequest(await tunnel.dial("tcp", backend.address), "GET", "/success");
      assert.equal(new TextDecoder().decode(res.body), "hello");

      const noCert = createSingleUseTunnel({
        address: options.address,
        tls: { ca: options.tls.ca },
      });
      await assert.rejects(noCert.dial("tcp", backend.address, { timeoutMs: 10_000 }), DialError);
      noCert.close();
    },
  );

  Deno.test(`[${link}] a dial to a closed port fails with connection refused`, async () => {
    await using server = await startServer({ link });
    await using _agent = await startAgent(server);
    const tunnel = createSingleUseTunnel({ udsPath: server.udsPath });
    const err = await tunnel.dial("tcp", `127.0.0.1:${CLOSED_PORT}`).catch((e) => e);
    assert.ok(err instanceof DialError, String(err));
    assert.equal(err.reason, "endpoint");
    assert.match(err.message, /connection refused/);
    assert.equal(
      await metric(
        server,
        'konnectivity_network_proxy_server_dial_failure_count{reason="error_response"}',
      ),
      1,
    );
  });

  Deno.test(
    `[${link}] a dial with no agent connected fails with No agent available`,
    async () => {
      await using server = await startServer({ link });
      const err = await createSingleUseTunnel({ udsPath: server.udsPath }).dial(
        "tcp",
        "127.0.0.1:80",
      )
        .catch((e) => e);
      assert.ok(err instanceof DialError);
      assert.equal(err.message, "No agent available");
      const ready = await server.health("/readyz");
      assert.equal(ready.status, 500);
      assert.equal(await ready.text(), "no connection to any proxy agent");
    },
  );

  Deno.test(
    `[${link}] 100 concurrent single-use tunnels each get their own echo back`,
    async () => {
      await using backend = startHttpBackend();
      await using server = await startServer({ link });
      await using _a1 = await startAgent(server);
      await using _a2 = await startAgent(server);
      const results = await Promise.all(Array.from({ length: 100 }, async (_, i) => {
        const tunnel = createSingleUseTunnel({ udsPath: server.udsPath });
        const conn = await tunnel.dial("tcp", backend.address);
        const body = new TextEncoder().encode(`request-${i}`);
        const res = await httpRequest(conn, "POST", "/echo", body);
        return new TextDecoder().decode(res.body);
      }));
      results.forEach((got, i) => assert.equal(got, `request-${i}`));
    },
  );

  Deno.test(
    `[${link}] 10 concurrent tunnels each download 10 x 1 MiB byte-exact`,
    async () => {
      await using backend = startHttpBackend();
      await using server = await startServer({ link });
      await using _agent = await startAgent(server);
      await Promise.all(Array.from({ length: 10 }, async () => {
        const tunnel = createSingleUseTunnel({ udsPath: server.udsPath });
        const conn = await tunnel.dial("tcp", backend.address);
        const res = await httpRequest(conn, "GET", "/download?chunks=10&size=1048576");
        assert.equal(res.status, 200);
        assert.equal(res.body.length, 10 << 20);
        assert.equal(firstMismatch(res.body), -1);
      }));
    },
  );

  Deno.test(`[${link}] 10 MiB upload through a tunnel arrives byte-exact`, async () => {
    await using backend = startHttpBackend();
    await using server = await startServer({ link });
    await using _agent = await startAgent(server);
    const body = pattern(0, 10 << 20);
    const sum = checksum(body);
    const conn = await createSingleUseTunnel({ udsPath: server.udsPath }).dial(
      "tcp",
      backend.address,
    );
    const res = await httpRequest(conn, "POST", "/upload", body);
    assert.equal(new TextDecoder().decode(res.body), `${body.length} ${sum.a}:${sum.b}`);
  });

  /**
   * An echo backend, a server on a UDS, an agent and one connection to the backend through a
   * reusable tunnel, with the connection's writer, reader and `readExactly` leftovers. Disposing it
   * disposes the tunnel, agent, server and backend, in that order.
   */
  Deno.test(`[${link}] raw TCP echo through a tunnel with partial reads`, async () => {
    await using setup = await echoThroughTunnel(link);
    const { conn, writer, reader, pending } = setup;
    const first = new TextEncoder().encode("0123456789abcdefghijklmno"); // 25 bytes
    await writer.write(first);
    const a = await readExactly(reader, 10, pending);
    const b = await readExactly(reader, 10, pending);
    await writer.write(new TextEncoder().encode("XYZ"));
    const c = await readExactly(reader, 8, pending);
    assert.equal(new TextDecoder().decode(a) + new TextDecoder().decode(b), "0123456789abcdefghij");
    assert.equal(new TextDecoder().decode(c), "klmnoXYZ");
    reader.releaseLock();
    writer.releaseLock();
    await conn[Symbol.asyncDispose]();
    assert.equal(conn.closeError, "");
  });

  Deno.test(`[${link}] after an agent restart, new tunnels work`, async () => {
    await using backend = startHttpBackend();
    await using server = await startServer({ link });
    const first = await startAgent(server);
    let res = await httpRequest(
      await createSingleUseTunnel({ udsPath: server.udsPath }).dial("tcp", backend.address),
      "GET",
      "/success",
    );
    assert.equal(res.status, 200);
    await first.process.stop();
    await server.agents(0);
    assert.equal(await server.status("/readyz"), 500);
    await using _second = await startAgent(server);
    await server.agents(1);
    assert.equal(await server.status("/readyz"), 200);
    res = await httpRequest(
      await createSingleUseTunnel({ udsPath: server.udsPath }).dial("tcp", backend.address),
      "GET",
      "/success",
    );
    assert.equal(new TextDecoder().decode(res.body), "hello");
  });

  Deno.test(`[${link}] after a server restart, the agent reconnects`, async () => {
    await using backend = startHttpBackend();
    const first = await startServer({ link });
    await using agent = await startAgent(first);
    await first[Symbol.asyncDispose]();
    await agent.notReady();
    assert.equal(await httpStatus(`http://127.0.0.1:${agent.healthPort}/readyz`), 503);
    // The agent retries the port it was given: the new server binds the one the first reported.
    const { agentPort, websocketPort } = first;
    await using second = await startServer({ agentPort, websocketPort, link });
    await agent.ready();
    const res = await httpRequest(
      await createSingleUseTunnel({ udsPath: second.udsPath }).dial("tcp", backend.address),
      "GET",
      "/success",
    );
    assert.equal(new TextDecoder().decode(res.body), "hello");
  });

  Deno.test({
    name: `[${link}] a cancelled pending dial (DIAL_CLS) leaves no entry behind`,
    ignore: !havePython,
    async fn() {
      // Debug level logs "forwarding DIAL_REQ" once a dial is pending.
      await using server = await startServer({ link, extraArgs: ["--v=5"] });
      await using _agent = await startAgent(server);
      const hole = await startBlackhole();
      try {
        const tunnel = createSingleUseTunnel({ udsPath: server.udsPath });
        const cancel = new AbortController();
        const from = server.process.mark();
        const dialing = tunnel.dial("tcp", hole.address, { signal: cancel.signal })
          .catch((e) => e);
        await server.process.waitForLog("forwarding DIAL_REQ", { from });
        assert.equal(
          await metric(server, "konnectivity_network_proxy_server_pending_backend_dials"),
          1,
        );
        cancel.abort();
        const err = await dialing;
        assert.ok(err instanceof DialError, String(err));
        assert.equal(err.reason, "context");
        const ended = await awaitTables(
          server.process,
          (g) => g.pending === 0 && g.frontends === 0,
          "the pending dial and its stream to be gone",
          { from },
        );
        assert.equal(ended["state"], "pending", "the dial was still pending when it ended");
        const failure = await server.process.waitForLog("dial failure", { from });
        assert.equal(failure["reason"], "frontend_close", "the frontend's close removed the dial");
        assert.equal(
          await metric(server, "konnectivity_network_proxy_server_pending_backend_dials"),
          0,
        );
        assert.equal(
          await metric(
            server,
            'konnectivity_network_proxy_server_grpc_connections{service_method="Proxy"}',
          ),
          0,
        );
        assert.equal(
          await metric(
            server,
            'konnectivity_network_proxy_server_dial_failure_count{reason="frontend_close"}',
          ),
          1,
        );
      } finally {
        await hole.stop();
      }
    },
  });
}

Deno.test("malformed packets end only their own stream, with an error", async () => {
  // A healthy connection, open across the bad ones.
  await using setup = await echoThroughTunnel();
  const { server, writer, reader, pending } = setup;

  const cases: [string, number[], RegExp][] = [
    ["truncated varint", [0x08, 0xff], /malformed packet/],
    ["length past the end", [0x22, 0x10, 0x08], /malformed packet/],
    ["DATA type without payload", [0x08, 0x04], /malformed packet.*DATA/],
    ["DATA type with a dialRequest payload", [0x08, 0x04, 0x12, 0x00], /malformed packet/],
    ["empty packet (DIAL_REQ without payload)", [], /malformed packet/],
  ];
  for (const [what, bytes, expected] of cases) {
    const status = await rawBidiStream(frontendClient(server.udsPath), "/ProxyService/Proxy", {
      message: new Uint8Array(bytes),
    });
    assert.equal(status.code, grpc.status.INVALID_ARGUMENT, what);
    assert.match(status.details, expected, what);
    await writer.write(new TextEncoder().encode(what));
    const back = await readExactly(reader, what.length, pending);
    assert.equal(new TextDecoder().decode(back), what, `healthy stream after ${what}`);
  }
  assert.equal(await server.status("/healthz"), 200);
  reader.releaseLock();
  writer.releaseLock();
});

Deno.test("a malformed packet from an agent ends only that agent's stream", async () => {
  await using backend = startHttpBackend();
  await using server = await startServer();
  await using _agent = await startAgent(server.agentPort, { agentId: "good-agent" });
  const status = await rawBidiStream(agentPortClient(server), "/AgentService/Connect", {
    metadata: { agentid: "bad-agent", agentidentifiers: "" },
    message: new Uint8Array([0x08, 0x01]), // DIAL_RSP, no payload
    afterHeaders: true,
  });
  assert.equal(status.code, grpc.status.INVALID_ARGUMENT);
  assert.match(status.details, /malformed packet/);
  const res = await httpRequest(
    await createSingleUseTunnel({ udsPath: server.udsPath }).dial("tcp", backend.address),
    "GET",
    "/success",
  );
  assert.equal(new TextDecoder().decode(res.body), "hello");
});

Deno.test("an agent without an agent ID is refused with upstream's message", async () => {
  await using server = await startServer();
  const status = await rawBidiStream(agentPortClient(server), "/AgentService/Connect", {
    metadata: { agentidentifiers: "" },
    timeoutMs: 10_000,
  });
  assert.equal(status.details, "expected one agent ID in the context, got []");
});
