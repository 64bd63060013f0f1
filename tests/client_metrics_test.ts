/**
 * The client library's opt-in metrics (`@knp/client/metrics`) after real dials through real server
 * and agent processes: dials by result and kind, upstream's dial-failure reasons, the dial
 * histogram, open tunnels and connections, and bytes each way.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { createTunnel, DialError } from "@knp/client";
import { clientMetrics } from "@knp/client/metrics";
import { readExactly, startEchoBackend } from "./backends.ts";
import { CLOSED_PORT, startAgent, startServer } from "./framework.ts";

const BYTES = 1500;

function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

Deno.test("clientMetrics counts a tunnel's dials, connections and bytes in the caller's registry", async () => {
  await using echo = startEchoBackend();
  await using server = await startServer();
  await using _agent = await startAgent(server);
  await server.agents(1);
  const registry = new Registry();
  const metrics = clientMetrics(registry);
  assert.equal(metrics.registry, registry);
  const tunnel = createTunnel({ udsPath: server.udsPath, metrics });
  await assert.rejects(tunnel.dial("tcp", `127.0.0.1:${CLOSED_PORT}`), DialError);
  const conn = await tunnel.dial("tcp", echo.address);
  const writer = conn.writable.getWriter();
  const reader = conn.readable.getReader();
  await writer.write(new Uint8Array(BYTES).fill(7));
  assert.equal((await readExactly(reader, BYTES, { rest: new Uint8Array() }))[BYTES - 1], 7);
  let text = await registry.metrics();
  assert.equal(sample(text, "knp_client_open_tunnels"), 1);
  assert.equal(sample(text, "knp_client_open_connections"), 1);
  assert.equal(sample(text, 'knp_client_dials_total{result="success",kind="none"}'), 1);
  assert.equal(sample(text, 'knp_client_dials_total{result="failure",kind="dial-refused"}'), 1);
  assert.equal(
    sample(text, 'konnectivity_network_proxy_client_dial_failure_total{reason="endpoint"}'),
    1,
  );
  assert.equal(sample(text, "knp_client_dial_duration_seconds_count"), 1);
  assert.equal(sample(text, 'knp_client_bytes_total{direction="sent"}'), BYTES);
  assert.equal(sample(text, 'knp_client_bytes_total{direction="received"}'), BYTES);
  reader.releaseLock();
  writer.releaseLock();
  await conn[Symbol.asyncDispose]();
  text = await registry.metrics();
  assert.equal(sample(text, "knp_client_open_connections"), 0);
  await tunnel[Symbol.asyncDispose]();
  text = await registry.metrics();
  assert.equal(sample(text, "knp_client_open_tunnels"), 0);
});

Deno.test("clientMetrics makes a registry when given none", async () => {
  const metrics = clientMetrics();
  assert.match(await metrics.registry.metrics(), /^# TYPE knp_client_bytes_total counter$/m);
});
