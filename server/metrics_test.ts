import assert from "node:assert/strict";
import { dialRequest } from "@knp/proto";
import { memoryPipe } from "@knp/transport/packet_stream";
import { startPeer } from "@knp/testing/fakes";
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
  let text = metrics.render();
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
  text = metrics.render();
  assert.equal(readSample(text, `${NS}_dial_failure_count{reason="no_agent"}`), 1);
  assert.equal(readSample(text, `${NS}_http_connections`), 0);
  core.close();
  await settle();
});
