import assert from "node:assert/strict";
import { dialRequest } from "@knp/proto";
import { memoryPipe } from "@knp/transport/packet_stream";
import { AgentMetrics } from "./metrics.ts";

const NS = "konnectivity_network_proxy_agent";

function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

Deno.test("AgentMetrics maps dial outcomes to upstream's reasons and reads its source", async () => {
  const metrics = new AgentMetrics({ processMetrics: false });
  metrics.onDial({ ok: false, address: "a:1", ms: 5000, kind: "dial-timeout" });
  metrics.onDial({ ok: false, address: "a:1", ms: 1, kind: "dial-refused" });
  metrics.onDial({ ok: false, address: "a:1", ms: 1 });
  metrics.onDial({ ok: true, address: "a:1", ms: 20 });
  let text = await metrics.render();
  assert.equal(sample(text, `${NS}_endpoint_dial_failure_total{reason="timeout"}`), 1);
  assert.equal(sample(text, `${NS}_endpoint_dial_failure_total{reason="unknown"}`), 2);
  assert.equal(sample(text, `${NS}_dial_duration_seconds_count`), 1);
  assert.equal(sample(text, `${NS}_dial_duration_seconds_bucket{le="0.025"}`), 1);
  assert.equal(sample(text, `${NS}_dial_duration_seconds_bucket{le="0.005"}`), 0);
  assert.equal(sample(text, `${NS}_open_server_connections`), 0);
  metrics.watch({ size: 2, serverCount: 3, connections: 4 });
  text = await metrics.render();
  assert.equal(sample(text, `${NS}_open_server_connections`), 2);
  assert.equal(sample(text, `${NS}_known_server_count`), 3);
  assert.equal(sample(text, `${NS}_open_endpoint_connections`), 4);
  assert.equal(sample(text, "knp_agent_servers_known"), 3);
  assert.equal(sample(text, "knp_agent_servers_connected"), 2);
  assert.doesNotMatch(text, /^process_/m);
});

Deno.test("AgentMetrics.connector counts the server stream's packets by upstream's segments", async () => {
  const metrics = new AgentMetrics({ processMetrics: false });
  const [agentEnd, serverEnd] = memoryPipe();
  let closed = false;
  const connect = metrics.connector(() =>
    Promise.resolve({
      stream: agentEnd,
      serverId: "s1",
      serverCount: 1,
      close: () => closed = true,
    })
  );
  const connection = await connect();
  const got = Promise.withResolvers<void>();
  connection.stream.start({ onPacket: () => got.resolve(), onEnd: () => {} });
  serverEnd.start({ onPacket: () => {}, onEnd: () => {} });
  serverEnd.send(dialRequest("127.0.0.1:1", 1n));
  await got.promise;
  connection.stream.send(dialRequest("127.0.0.1:1", 2n));
  connection.close();
  assert.equal(closed, true);
  const text = await metrics.render();
  const packets = (segment: string) =>
    sample(text, `${NS}_stream_packets_total{segment="${segment}",packet_type="DIAL_REQ"}`);
  assert.equal(packets("to_agent"), 1);
  assert.equal(packets("from_agent"), 1);
  serverEnd.close();
  agentEnd.close();
});
