/**
 * The server's Prometheus metrics after real dials through real server and agent processes:
 * upstream's counters, gauges and the dial histogram, knp's byte and close-reason counters, and
 * `grpc_connections{service_method="Proxy"}` not counting HTTP-CONNECT tunnels.
 */

import assert from "node:assert/strict";
import { createTunnel, DialError } from "@knp/client";
import { readSample } from "../server/metrics.ts";
import { readExactly, startEchoBackend } from "./backends.ts";
import { endpointOf, tunnel } from "./connect_client.ts";
import {
  awaitTables,
  CLOSED_PORT,
  type ServerProcess,
  startAgent,
  startServer,
} from "./framework.ts";

const NS = "konnectivity_network_proxy_server";
const DIALS = 3;
const BYTES = 1000;

/** The admin port's `/metrics` (upstream's e2e scrapes it there). */
async function adminMetrics(server: ServerProcess): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${server.adminPort}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return await res.text();
}

/** `DIALS` echo round trips of `BYTES` each, every connection closed by the client. */
async function echoRoundTrips(server: ServerProcess, address: string): Promise<void> {
  await using tunnel = createTunnel({ udsPath: server.udsPath });
  for (let i = 0; i < DIALS; i++) {
    const conn = await tunnel.dial("tcp", address);
    const writer = conn.writable.getWriter();
    const reader = conn.readable.getReader();
    await writer.write(new Uint8Array(BYTES).fill(i + 1));
    const back = await readExactly(reader, BYTES, { rest: new Uint8Array() });
    assert.equal(back[BYTES - 1], i + 1);
    reader.releaseLock();
    writer.releaseLock();
    conn.close();
  }
  await assert.rejects(tunnel.dial("tcp", `127.0.0.1:${CLOSED_PORT}`), DialError);
}

Deno.test("server /metrics counts and times real dials (upstream names, knp extras)", async () => {
  await using echo = startEchoBackend();
  await using server = await startServer({ extraArgs: ["--v=5"] });
  await using _agent = await startAgent(server);
  await server.agents(1);
  const from = server.process.mark();
  await echoRoundTrips(server, echo.address);
  await awaitTables(
    server.process,
    (g) => g.pending === 0 && g.established === 0 && g.frontends === 0,
    "empty tables",
    { from },
  );
  const text = await adminMetrics(server);
  const sample = (series: string) => readSample(text, series);
  // Upstream's histogram: every successful dial observed, each under the last bucket.
  assert.equal(sample(`${NS}_dial_duration_seconds_count`), DIALS);
  assert.equal(sample(`${NS}_dial_duration_seconds_bucket{le="12.5"}`), DIALS);
  assert.equal(sample(`${NS}_dial_duration_seconds_bucket{le="+Inf"}`), DIALS);
  assert.ok(sample(`${NS}_dial_duration_seconds_sum`)! > 0);
  assert.equal(sample(`${NS}_connection_duration_seconds_count`), DIALS);
  // Writes to the frontend the transport took: at least each DIAL_RSP and one DATA per echo.
  assert.ok(sample(`${NS}_frontend_write_duration_seconds_count`)! >= 2 * DIALS);
  assert.equal(sample(`${NS}_dial_failure_count{reason="error_response"}`), 1);
  const packets = (segment: string, type: string) =>
    sample(`${NS}_stream_packets_total{segment="${segment}",packet_type="${type}"}`);
  assert.equal(packets("from_client", "DIAL_REQ"), DIALS + 1);
  assert.equal(packets("to_agent", "DIAL_REQ"), DIALS + 1);
  assert.equal(packets("from_agent", "DIAL_RSP"), DIALS + 1);
  assert.equal(packets("to_client", "DIAL_RSP"), DIALS + 1);
  assert.equal(
    sample(`knp_server_proxied_bytes_total{direction="client_to_agent"}`),
    DIALS * BYTES,
  );
  assert.equal(
    sample(`knp_server_proxied_bytes_total{direction="agent_to_client"}`),
    DIALS * BYTES,
  );
  assert.equal(sample(`knp_server_connections_closed_total{reason="close_request"}`), DIALS);
  // Gauges read at scrape time: one agent stream, no frontend left.
  assert.equal(sample(`${NS}_grpc_connections{service_method="Connect"}`), 1);
  assert.equal(sample(`${NS}_grpc_connections{service_method="Proxy"}`), 0);
  assert.equal(sample(`${NS}_ready_backend_connections`), 1);
  assert.equal(sample(`${NS}_ready_backends{proxy_strategy="default"}`), 1);
  assert.equal(sample(`${NS}_established_connections`), 0);
  assert.equal(sample(`${NS}_culled_leases_count`), 0);
  // Process metrics, under the names Go's collector uses.
  assert.ok(sample("process_cpu_seconds_total")! > 0);
  assert.ok(sample("process_start_time_seconds")! > 0);
  // knp's certificate expiry, per watched file: the test PKI's certificates are valid 365 days.
  for (const file of [server.pki.serverCert, server.pki.caCert]) {
    const left = sample(`knp_certificate_expiry_seconds{file="${file}"}`);
    assert.ok(left !== undefined && left > 364 * 86400 && left <= 365 * 86400, `${file}: ${left}`);
  }
  // The health port serves the same registry.
  const health = await (await server.health("/metrics")).text();
  assert.equal(readSample(health, `${NS}_dial_duration_seconds_count`), DIALS);
});

Deno.test("grpc_connections{Proxy} does not count HTTP-CONNECT tunnels", async () => {
  await using echo = startEchoBackend();
  await using server = await startServer({ extraArgs: ["--mode=http-connect", "--v=5"] });
  await using _agent = await startAgent(server);
  await server.agents(1);
  const from = server.process.mark();
  await using conn = await tunnel(await endpointOf(server), echo.address);
  await conn.write("ping");
  assert.equal(new TextDecoder().decode(await conn.readExactly(4)), "ping");
  await awaitTables(server.process, (g) => g.established === 1, "one connection", { from });
  const text = await adminMetrics(server);
  assert.equal(readSample(text, `${NS}_http_connections`), 1);
  assert.equal(readSample(text, `${NS}_established_connections`), 1);
  assert.equal(readSample(text, `${NS}_grpc_connections{service_method="Proxy"}`), 0);
  assert.equal(readSample(text, `${NS}_grpc_connections{service_method="Connect"}`), 1);
  assert.equal(
    readSample(text, `${NS}_stream_packets_total{segment="from_client",packet_type="DIAL_REQ"}`),
    1,
  );
});
