/**
 * The server's end of the fast link negotiation (server/fast_link.ts), through real server
 * processes: the switch reply a grpc-js client sees (headers before the status) under both gRPC
 * transports, knp's WebSocket agent link on the gRPC agent port carrying a dial next to a plain
 * HTTP/2 gRPC agent, and `--knp-fast-link=false`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as grpc from "@grpc/grpc-js";
import { createSingleUseTunnel } from "@knp/client";
import { connectWebSocket } from "../transport/ws_client.ts";
import { startHttpBackend } from "./backends.ts";
import { type ServerProcess, startAgent, startServer } from "./framework.ts";
import { agentPortClient } from "./grpc_raw.ts";
import { httpRequest } from "./http_client.ts";
import { readSample } from "../server/metrics.ts";

const CONNECT = "/AgentService/Connect";
const SWITCH_MESSAGE = "knp: continue on the WebSocket agent link";

/** What a grpc-js client saw of one agent call, in order. */
interface CallOutcome {
  /** Event names in arrival order ("metadata", "status"). */
  order: string[];
  headers: grpc.Metadata | undefined;
  status: grpc.StatusObject;
}

/** Opens `Connect` on the server's agent port with `metadata`; resolves on its final status. */
function agentCall(
  server: ServerProcess,
  metadata: Record<string, string>,
  endOnHeaders = false,
): Promise<CallOutcome> {
  const client = agentPortClient(server);
  const md = new grpc.Metadata();
  for (const [key, value] of Object.entries(metadata)) md.set(key, value);
  const call = client.makeBidiStreamRequest(
    CONNECT,
    (b: Uint8Array) => Buffer.from(b),
    (b) => b,
    md,
  );
  const order: string[] = [];
  let headers: grpc.Metadata | undefined;
  return new Promise((resolve) => {
    call.on("data", () => {});
    call.on("error", () => {});
    call.on("metadata", (m: grpc.Metadata) => {
      order.push("metadata");
      headers = m;
      if (endOnHeaders) call.cancel();
    });
    call.on("status", (status: grpc.StatusObject) => {
      order.push("status");
      client.close();
      resolve({ order, headers, status });
    });
  });
}

const OFFER = { "knp-links": "websocket", agentid: "offering-agent", agentidentifiers: "" };

Deno.test("fast link: the native agent port answers an offer with the switch reply", async () => {
  await using server = await startServer({ extraArgs: ["--v=5"] });
  const from = server.process.mark();
  const outcome = await agentCall(server, OFFER);
  assert.deepEqual(outcome.order, ["metadata", "status"], "headers must come before the status");
  assert.deepEqual(outcome.headers?.get("knp-link"), ["websocket"]);
  assert.deepEqual(outcome.headers?.get("knp-link-port"), [String(server.agentPort)]);
  assert.equal(outcome.status.code, grpc.status.UNAVAILABLE);
  assert.equal(outcome.status.details, SWITCH_MESSAGE);
  const reply = await server.process.waitForLog(
    "agent offered the WebSocket link: switch reply sent",
    { from },
  );
  assert.equal(reply["knp-link-port"], server.agentPort);
  // Answered before the handshake: the agent was neither admitted nor refused.
  const handshaken = server.process.records.slice(from).filter((r) =>
    r.msg === "agent connected" || r.msg === "agent refused"
  );
  assert.deepEqual(handshaken, []);
});

Deno.test("fast link: under grpc-js the reply names --knp-websocket-port", async () => {
  await using server = await startServer({
    link: "websocket",
    extraArgs: ["--knp-grpc-transport=grpc-js"],
  });
  const outcome = await agentCall(server, OFFER);
  assert.deepEqual(outcome.order, ["metadata", "status"], "headers must come before the status");
  assert.deepEqual(outcome.headers?.get("knp-link"), ["websocket"]);
  assert.deepEqual(outcome.headers?.get("knp-link-port"), [String(server.websocketPort)]);
  assert.equal(outcome.status.code, grpc.status.UNAVAILABLE);
  assert.equal(outcome.status.details, SWITCH_MESSAGE);
});

Deno.test("fast link: under grpc-js without --knp-websocket-port the offer is ignored", async () => {
  await using server = await startServer({ extraArgs: ["--knp-grpc-transport=grpc-js"] });
  const outcome = await agentCall(server, OFFER, true);
  assert.deepEqual(outcome.headers?.get("knp-link"), []);
  assert.deepEqual(outcome.headers?.get("serverid"), ["test-server"], "a plain gRPC handshake");
  assert.equal(outcome.status.code, grpc.status.CANCELLED);
});

Deno.test(
  "fast link: a WebSocket agent on the gRPC agent port carries a dial; gRPC agents still work",
  async () => {
    await using backend = startHttpBackend();
    await using server = await startServer();
    // The agent's own WebSocket connector (agent/ws_connector.ts), pointed at the agent port.
    await using _agent = await startAgent(server.agentPort, {
      agentId: "ws-agent",
      extraArgs: [`--knp-websocket-port=${server.agentPort}`],
    });
    const connected = await server.process.waitForLog((r) =>
      r.msg === "agent connected" && r.agentID === "ws-agent"
    );
    assert.match(String(connected.peer), /^ws:127\.0\.0\.1:\d+$/, "reported as a WebSocket link");
    // Counted as agents like those of --knp-websocket-port.
    const metrics = await (await server.health("/metrics")).text();
    const prefix = "konnectivity_network_proxy_server_";
    assert.equal(readSample(metrics, `${prefix}ready_backend_connections`), 1);
    assert.equal(readSample(metrics, `${prefix}grpc_connections{service_method="Connect"}`), 1);
    const conn = await createSingleUseTunnel({ udsPath: server.udsPath }).dial(
      "tcp",
      backend.address,
    );
    const answer = await httpRequest(conn, "GET", "/success");
    assert.equal(new TextDecoder().decode(answer.body), "hello");

    // An HTTP/2 gRPC agent (grpc-js, ALPN "h2") on the same port: admitted as before.
    const from = server.process.mark();
    const grpcAgent = await agentCall(
      server,
      { agentid: "h2-agent", agentidentifiers: "", "knp-flow-control": "v1;window=65536" },
      true,
    );
    assert.deepEqual(grpcAgent.headers?.get("serverid"), ["test-server"]);
    const h2 = await server.process.waitForLog(
      (r) => r.msg === "agent connected" && r.agentID === "h2-agent",
      { from },
    );
    assert.doesNotMatch(String(h2.peer), /^ws:/);
  },
);

Deno.test("fast link: --knp-fast-link=false keeps the agent port gRPC only", async () => {
  await using server = await startServer({ extraArgs: ["--knp-fast-link=false"] });
  const ca = await Deno.readTextFile(server.pki.caCert);
  const error = await connectWebSocket(`wss://localhost:${server.agentPort}/knp/v1/agent`, {
    caCerts: [ca],
    headers: { agentid: "ws-agent" },
  }).then(
    (ws) => {
      ws.close();
      return undefined;
    },
    (err: unknown) => err,
  );
  assert.ok(error instanceof Error, "the WebSocket upgrade must fail");
  assert.match(error.message, /NoApplicationProtocol/);

  const outcome = await agentCall(server, OFFER, true);
  assert.deepEqual(outcome.headers?.get("knp-link"), [], "no switch reply");
  assert.deepEqual(outcome.headers?.get("serverid"), ["test-server"]);
});
