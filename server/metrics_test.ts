import assert from "node:assert/strict";
import {
  dataPacket,
  dialRequest,
  dialResponse,
  knpWindow,
  parseAgentIdentifiers,
} from "@knp/proto";
import { memoryPipe } from "@knp/transport/packet_stream";
import { startPeer } from "@knp/testing/fakes";
import { parseDestinationRules } from "@knp/core/destination_policy";
import { ProxyServer } from "./proxy_server.ts";
import { readSample, ServerMetrics } from "./metrics.ts";

const NS = "konnectivity_network_proxy_server";
const settle = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

Deno.test("ServerMetrics counts the core's dial failures and reads its tables", async () => {
  const core = new ProxyServer({ serverId: "s1" });
  let http = 3;
  const metrics = new ServerMetrics(core, { httpConnections: () => http });
  const [client, server] = memoryPipe();
  const peer = startPeer(client);
  core.serveFrontend(server);
  peer.end.send(dialRequest("127.0.0.1:1", 1n));
  await settle();
  let text = await metrics.render();
  assert.equal(readSample(text, `${NS}_dial_failure_count{reason="no_agent"}`), 1);
  assert.equal(readSample(text, `${NS}_http_connections`), 3);
  assert.equal(readSample(text, `${NS}_pending_backend_dials`), 0);
  assert.equal(readSample(text, `${NS}_ready_backends{proxy_strategy="default"}`), 0);

  // After dispose the counters stop; the gauges still read the core.
  metrics.dispose();
  http = 0;
  const [client2, server2] = memoryPipe();
  const peer2 = startPeer(client2);
  core.serveFrontend(server2);
  peer2.end.send(dialRequest("127.0.0.1:1", 2n));
  await settle();
  text = await metrics.render();
  assert.equal(readSample(text, `${NS}_dial_failure_count{reason="no_agent"}`), 1);
  assert.equal(readSample(text, `${NS}_http_connections`), 0);
  core.close();
  await settle();
});

Deno.test("ServerMetrics counts policy denials by rule source, apart from upstream's failures", async () => {
  const core = new ProxyServer({
    serverId: "s1",
    destinationPolicy: {
      allow: [],
      deny: parseDestinationRules(["10.0.0.0/8"], "--knp-destination-deny"),
    },
  });
  const metrics = new ServerMetrics(core, { processMetrics: false });
  const [client, server] = memoryPipe();
  const peer = startPeer(client);
  core.serveFrontend(server);
  peer.end.send(dialRequest("10.1.2.3:443", 7n));
  await settle();
  const text = await metrics.render();
  assert.equal(
    readSample(text, `knp_server_policy_denials_total{source="--knp-destination-deny"}`),
    1,
  );
  assert.equal(readSample(text, `${NS}_dial_failure_count{reason="error_response"}`), 1);
  // The frontend stream was tapped: its DIAL_REQ in, the refusing DIAL_RSP out.
  assert.equal(
    readSample(text, `${NS}_stream_packets_total{segment="from_client",packet_type="DIAL_REQ"}`),
    1,
  );
  assert.equal(
    readSample(text, `${NS}_stream_packets_total{segment="to_client",packet_type="DIAL_RSP"}`),
    1,
  );
  assert.doesNotMatch(text, /^process_/m);
  metrics.dispose();
  core.close();
  await settle();
});

Deno.test("ServerMetrics reports connections holding their agent stream paused", async () => {
  const core = new ProxyServer({ serverId: "s1" });
  const metrics = new ServerMetrics(core, { processMetrics: false });
  const [agentEnd, serverEnd] = memoryPipe();
  const peer = startPeer(agentEnd);
  const backend = core.addBackend("agent-1", parseAgentIdentifiers(""), serverEnd);
  const [otherAgent, otherServer] = memoryPipe();
  const otherPeer = startPeer(otherAgent);
  core.addBackend("agent-2", parseAgentIdentifiers(""), otherServer);
  let text = await metrics.render();
  assert.equal(readSample(text, "knp_server_backpressured_connections"), 0);
  assert.equal(readSample(text, "knp_server_paused_agent_streams"), 0);
  const [slow1, slow2] = [{}, {}];
  backend.pause.hold(slow1);
  backend.pause.hold(slow2);
  text = await metrics.render();
  assert.equal(readSample(text, "knp_server_backpressured_connections"), 2);
  assert.equal(readSample(text, "knp_server_paused_agent_streams"), 1);
  backend.pause.release(slow1);
  backend.pause.release(slow2);
  text = await metrics.render();
  assert.equal(readSample(text, "knp_server_backpressured_connections"), 0);
  assert.equal(readSample(text, "knp_server_paused_agent_streams"), 0);
  peer.end.close();
  otherPeer.end.close();
  core.close();
  await settle();
});

Deno.test("ServerMetrics counts connections waiting for the agent's flow-control credit", async () => {
  const core = new ProxyServer({ serverId: "s1" });
  const metrics = new ServerMetrics(core, { processMetrics: false });
  const [agentEnd, serverEnd] = memoryPipe();
  const agent = startPeer(agentEnd);
  const windows = { sendWindow: 1024, recvWindow: 1024 };
  core.addBackend("agent-1", parseAgentIdentifiers(""), serverEnd, windows);
  const [client, frontendEnd] = memoryPipe();
  const frontend = startPeer(client);
  core.serveFrontend(frontendEnd);
  frontend.end.send(dialRequest("10.0.0.1:80", 5n));
  await settle();
  assert.equal(agent.of("DIAL_REQ").length, 1);
  agent.end.send(dialResponse(5n, 9n));
  await settle();
  const waiting = async () =>
    readSample(await metrics.render(), "knp_server_connections_waiting_for_credit");
  assert.equal(await waiting(), 0);
  // More than the agent's window and no grant back: the frontend is held for credit.
  frontend.end.send(dataPacket(9n, new Uint8Array(2048)));
  await settle();
  assert.equal(agent.of("DATA").length, 1);
  assert.equal(await waiting(), 1);
  agent.end.send(knpWindow(9n, 4096));
  await settle();
  assert.equal(await waiting(), 0);
  metrics.dispose();
  agent.end.close();
  frontend.end.close();
  core.close();
  await settle();
});
