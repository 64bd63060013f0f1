/**
 * One dial traced client → server → agent → endpoint with OpenTelemetry, across real processes:
 * the client library in its own process, proxy-server and proxy-agent started with their
 * computed permission sets, each with Deno's built-in OpenTelemetry (`OTEL_DENO=true`) exporting
 * OTLP/JSON to an in-process receiver. The test awaits the spans as they arrive and checks their
 * parent links; and that without `OTEL_DENO` nothing is added to the wire.
 *
 * @module
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { foundFreePort, startAgent, startServer, testPki } from "./framework.ts";
import { startEchoBackend } from "./backends.ts";
import { connect, endpointOf } from "./connect_client.ts";
import { type OtlpReceiver, type ReceivedSpan, startOtlpReceiver } from "./otlp_receiver.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const CLIENT = 3;
const SERVER = 2;
const ERROR = 2;

/** Runs `tests/traced_client.ts` with tracing on; returns its root span's ids. */
async function tracedClientDial(
  receiver: OtlpReceiver,
  udsPath: string,
  address: string,
): Promise<{ traceId: string; spanId: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-prompt",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--frozen",
      "tests/traced_client.ts",
      udsPath,
      address,
    ],
    cwd: ROOT,
    env: { NO_COLOR: "1", ...receiver.env("knp-client") },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, stdout + new TextDecoder().decode(out.stderr));
  return JSON.parse(stdout.trim().split("\n").at(-1)!);
}

function spanIn(receiver: OtlpReceiver, name: string, traceId: string): Promise<ReceivedSpan> {
  return receiver.waitForSpan(
    (s) => s.name === name && s.traceId === traceId,
    `${name} in ${traceId}`,
  );
}

Deno.test("a dial is traced client → server → agent with parent links", async () => {
  await using receiver = startOtlpReceiver();
  await using echo = startEchoBackend();
  await using server = await startServer({ env: receiver.env("knp-server") });
  await using agent = await startAgent(server, {
    agentId: "traced-agent",
    env: receiver.env("knp-agent"),
  });
  await agent.ready();
  await server.agents(1);

  const root = await tracedClientDial(receiver, server.udsPath, echo.address);
  const client = await spanIn(receiver, "knp.client.dial", root.traceId);
  const hop = await spanIn(receiver, "knp.server.dial", root.traceId);
  const dial = await spanIn(receiver, "knp.agent.dial", root.traceId);

  assert.equal(client.service, "knp-client");
  assert.equal(client.parentSpanId, root.spanId, "the client span is the caller's span's child");
  assert.equal(client.kind, CLIENT);
  assert.equal(client.attributes["knp.address"], echo.address);
  assert.equal(hop.service, "knp-server");
  assert.equal(hop.parentSpanId, client.spanId, "the server span is the client span's child");
  assert.equal(hop.kind, SERVER);
  assert.equal(hop.attributes["knp.agent_id"], "traced-agent");
  assert.equal(dial.service, "knp-agent");
  assert.equal(dial.parentSpanId, hop.spanId, "the agent span is the server span's child");
  assert.equal(dial.attributes["knp.address"], echo.address);
  assert.equal(dial.attributes["knp.server_id"], "test-server");
  const connectId = client.attributes["knp.connect_id"];
  assert.ok(connectId !== undefined && connectId !== "0");
  assert.equal(hop.attributes["knp.connect_id"], connectId);
  assert.equal(dial.attributes["knp.connect_id"], connectId);
  for (const s of [client, hop, dial]) assert.notEqual(s.status, ERROR, s.name);
});

Deno.test("an HTTP-CONNECT traceparent header parents the server span; failures are error spans", async () => {
  await using receiver = startOtlpReceiver();
  await using echo = startEchoBackend();
  await using server = await startServer({
    extraArgs: ["--mode=http-connect"],
    env: receiver.env("knp-server"),
  });
  await using agent = await startAgent(server, { env: receiver.env("knp-agent") });
  await agent.ready();
  await server.agents(1);
  const endpoint = await endpointOf(server);
  const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
  const parent = "00f067aa0ba902b7";
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const refused = `127.0.0.1:${closed.addr.port}`;
  closed.close();

  for (const target of [echo.address, refused]) {
    const head = `CONNECT ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
      `traceparent: 00-${traceId}-${parent}-01\r\n\r\n`;
    const { conn, head: answer } = await connect(endpoint, target, { head });
    assert.equal(answer.status, target === refused ? 502 : 200, answer.raw);
    conn.close();
  }
  const hops = await Promise.all([echo.address, refused].map((target) =>
    receiver.waitForSpan(
      (s) => s.name === "knp.server.dial" && s.attributes["knp.address"] === target,
      `server span for ${target}`,
    )
  ));
  for (const [i, hop] of hops.entries()) {
    assert.equal(hop.traceId, traceId);
    assert.equal(hop.parentSpanId, parent);
    const dial = await receiver.waitForSpan(
      (s) => s.name === "knp.agent.dial" && s.parentSpanId === hop.spanId,
      "agent span",
    );
    assert.equal(dial.traceId, traceId);
    assert.equal(hop.status === ERROR, i === 1, "only the refused dial's server span failed");
    assert.equal(dial.status === ERROR, i === 1, "only the refused dial's agent span failed");
  }
});

Deno.test("without OTEL_DENO no trace context is added; a received one is passed on unchanged", async () => {
  await using echo = startEchoBackend();
  await using server = await startServer({ extraArgs: ["--mode=http-connect", "--v=5"] });
  await using agent = await startAgent(server, { extraArgs: ["--v=5"] });
  await agent.ready();
  await server.agents(1);
  const endpoint = await endpointOf(server);
  const given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  for (const traceparent of [undefined, given]) {
    const from = agent.process.mark();
    const head = `CONNECT ${echo.address} HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
      (traceparent ? `traceparent: ${traceparent}\r\n` : "") + "\r\n";
    const { conn, head: answer } = await connect(endpoint, echo.address, { head });
    assert.equal(answer.status, 200, answer.raw);
    conn.close();
    // The agent's per-packet trace record (-v=5) of the DIAL_REQ it received.
    const record = await agent.process.waitForLog(
      (r) => r.msg === "packet received" && r["type"] === "DIAL_REQ",
      { from },
    );
    assert.equal(record.level, "trace");
    assert.equal(record["logger"], "knp.agent");
    assert.equal(record["traceparent"], traceparent);
  }
  // Per-module categories on the lifecycle records too.
  const dialed = await agent.process.waitForLog("dial succeeded");
  assert.equal(dialed["logger"], "knp.agent.dialer");
  assert.equal(typeof dialed["agentID"], "string");
  const fromFrontend = await server.process.waitForLog((r) =>
    r.msg === "packet received" && r["side"] === "frontend" && r["type"] === "DIAL_REQ"
  );
  assert.equal(fromFrontend.level, "trace");
  assert.equal(fromFrontend["logger"], "knp.server.core");
  const forwarded = await server.process.waitForLog("forwarding DIAL_REQ");
  assert.equal(forwarded["logger"], "knp.server.core");
  assert.equal(forwarded["serverID"], "test-server");
});

const UPSTREAM_AGENT = Deno.env.get("KNP_UPSTREAM_AGENT");

Deno.test({
  name: "upstream's Go agent skips the trace context and dials (KNP_UPSTREAM_AGENT)",
  ignore: !UPSTREAM_AGENT,
  async fn() {
    await using receiver = startOtlpReceiver();
    await using echo = startEchoBackend();
    await using server = await startServer({ env: receiver.env("knp-server") });
    const { files } = await testPki();
    const agent = new Deno.Command(UPSTREAM_AGENT!, {
      args: [
        "--proxy-server-host=127.0.0.1",
        `--proxy-server-port=${server.agentPort}`,
        `--ca-cert=${files.caCert}`,
        `--agent-cert=${files.clientCert}`,
        `--agent-key=${files.clientKey}`,
        "--health-server-host=127.0.0.1",
        `--health-server-port=${foundFreePort()}`,
        "--admin-bind-address=127.0.0.1",
        `--admin-server-port=${foundFreePort()}`,
        "--agent-id=upstream-agent",
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      await server.agents(1);
      const root = await tracedClientDial(receiver, server.udsPath, echo.address);
      const client = await spanIn(receiver, "knp.client.dial", root.traceId);
      const hop = await spanIn(receiver, "knp.server.dial", root.traceId);
      assert.equal(hop.parentSpanId, client.spanId);
      assert.equal(hop.attributes["knp.agent_id"], "upstream-agent");
      assert.notEqual(hop.status, ERROR);
      assert.ok(hop.attributes["knp.connect_id"] !== undefined);
    } finally {
      try {
        agent.kill("SIGKILL");
      } catch { /* exited already; server.agents(1) failed then */ }
      await agent.status;
    }
  },
});

const UPSTREAM_SERVER = Deno.env.get("KNP_UPSTREAM_SERVER");

Deno.test({
  name:
    "upstream's Go server passes the client's trace context on to our agent (KNP_UPSTREAM_SERVER)",
  ignore: !UPSTREAM_SERVER,
  async fn() {
    await using receiver = startOtlpReceiver();
    await using echo = startEchoBackend();
    const { files } = await testPki();
    const dir = await Deno.makeTempDir({ prefix: "knp-trace-upstream-" });
    const agentPort = foundFreePort();
    const server = new Deno.Command(UPSTREAM_SERVER!, {
      args: [
        "--mode=grpc",
        `--uds-name=${dir}/s.sock`,
        "--server-port=0",
        `--agent-port=${agentPort}`,
        "--agent-bind-address=127.0.0.1",
        `--health-port=${foundFreePort()}`,
        "--health-bind-address=127.0.0.1",
        `--admin-port=${foundFreePort()}`,
        "--admin-bind-address=127.0.0.1",
        `--cluster-cert=${files.serverCert}`,
        `--cluster-key=${files.serverKey}`,
        `--cluster-ca-cert=${files.caCert}`,
        "--server-id=upstream-server",
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      // Upstream serves its frontend before it accepts agents: a connected agent means both.
      await using _agent = await startAgent(agentPort, { env: receiver.env("knp-agent") });
      const root = await tracedClientDial(receiver, `${dir}/s.sock`, echo.address);
      const client = await spanIn(receiver, "knp.client.dial", root.traceId);
      const dial = await spanIn(receiver, "knp.agent.dial", root.traceId);
      assert.equal(dial.parentSpanId, client.spanId, "the agent span is the client span's child");
      assert.equal(dial.attributes["knp.server_id"], "upstream-server");
      assert.notEqual(dial.status, ERROR);
    } finally {
      try {
        server.kill("SIGKILL");
      } catch { /* exited already */ }
      await server.status;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
