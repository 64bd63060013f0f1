// deno-lint-ignore-file no-console -- reports a skipped test
/**
 * The three agent metrics upstream's integration suite reads (`open_server_connections`,
 * `endpoint_dial_failure_total{reason}`, `open_endpoint_connections`), compared byte for byte
 * (HELP and TYPE lines included) with the text upstream's agent prints, after the same real
 * dials through a real server: one refused, one established and held open.
 *
 * The expected HELP strings are upstream's (reference §7.2). With `KNP_UPSTREAM_AGENT` set to an
 * upstream `proxy-agent` binary, a second test runs that binary in the same scenario and checks
 * that it prints exactly the same three families.
 */

import assert from "node:assert/strict";
import { createTunnel, DialError } from "@knp/client";
import { startEchoBackend } from "./backends.ts";
import {
  CLOSED_PORT,
  foundFreePort,
  type ServerProcess,
  startAgent,
  startServer,
} from "./framework.ts";

const NS = "konnectivity_network_proxy_agent";
const UPSTREAM = Deno.env.get("KNP_UPSTREAM_AGENT");
if (UPSTREAM === undefined) {
  console.log("skipping the upstream agent test: KNP_UPSTREAM_AGENT unset");
}

/** Upstream's exposition of the three families after one server, one refused dial, one open. */
const EXPECTED = [
  `# HELP ${NS}_endpoint_dial_failure_total Number of failures dialing the remote endpoint, by reason (example: timeout).`,
  `# TYPE ${NS}_endpoint_dial_failure_total counter`,
  `${NS}_endpoint_dial_failure_total{reason="unknown"} 1`,
  `# HELP ${NS}_open_endpoint_connections Current number of open endpoint connections.`,
  `# TYPE ${NS}_open_endpoint_connections gauge`,
  `${NS}_open_endpoint_connections 1`,
  `# HELP ${NS}_open_server_connections Current number of open server connections.`,
  `# TYPE ${NS}_open_server_connections gauge`,
  `${NS}_open_server_connections 1`,
].join("\n");

/** The lines of `family` (HELP, TYPE, samples) in an exposition, in their order. */
function familyText(text: string, family: string): string[] {
  return text.split("\n").filter((line) =>
    line.startsWith(`# HELP ${family} `) || line.startsWith(`# TYPE ${family} `) ||
    line.startsWith(`${family} `) || line.startsWith(`${family}{`)
  );
}

/** The three families, in name order, from an agent's health port. */
async function scrapeThree(healthPort: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${healthPort}/metrics`);
  assert.equal(res.status, 200);
  const text = await res.text();
  return ["endpoint_dial_failure_total", "open_endpoint_connections", "open_server_connections"]
    .flatMap((name) => familyText(text, `${NS}_${name}`)).join("\n");
}

/**
 * Through `server` (its one agent connected): a dial to a closed port (refused by the agent), then
 * a dial to an echo backend that stays open while the agent at `healthPort` is scraped.
 */
async function scenario(server: ServerProcess, healthPort: number): Promise<string> {
  await using echo = startEchoBackend();
  await using tunnel = createTunnel({ udsPath: server.udsPath });
  await assert.rejects(tunnel.dial("tcp", `127.0.0.1:${CLOSED_PORT}`), DialError);
  const conn = await tunnel.dial("tcp", echo.address);
  try {
    return await scrapeThree(healthPort);
  } finally {
    await conn.close();
  }
}

Deno.test("knp's agent prints upstream's three metrics byte for byte after real dials", async () => {
  await using server = await startServer();
  await using agent = await startAgent(server);
  await server.agents(1);
  assert.equal(await scenario(server, agent.healthPort), EXPECTED);
  // Least-privilege permissions do not grant /proc/self: its series are left out, not reported
  // as 0, and the resident memory comes from Deno.memoryUsage().
  const text = await (await fetch(`http://127.0.0.1:${agent.healthPort}/metrics`)).text();
  assert.match(text, /^process_resident_memory_bytes [1-9]\d*$/m);
  assert.doesNotMatch(text, /^process_open_fds /m);
  assert.match(text, /^process_cpu_seconds_total /m);
  // knp's own: the one server it learned of, and holds.
  assert.match(text, /^knp_agent_servers_known 1$/m);
  assert.match(text, /^knp_agent_servers_connected 1$/m);
  // knp's certificate expiry, per watched file: the test PKI's certificates are valid 365 days.
  for (const file of [server.pki.clientCert, server.pki.caCert]) {
    const line = text.split("\n").find((l) =>
      l.startsWith(`knp_certificate_expiry_seconds{file="${file}"} `)
    );
    const left = Number(line?.split(" ")[1]);
    assert.ok(left > 364 * 86400 && left <= 365 * 86400, `${file}: ${line}`);
  }
});

Deno.test({
  name: "upstream's agent prints the same three families in the same scenario",
  ignore: UPSTREAM === undefined,
  async fn() {
    await using server = await startServer();
    const healthPort = foundFreePort();
    const child = new Deno.Command(UPSTREAM!, {
      args: [
        "--proxy-server-host=127.0.0.1",
        `--proxy-server-port=${server.agentPort}`,
        `--ca-cert=${server.pki.caCert}`,
        `--agent-cert=${server.pki.clientCert}`,
        `--agent-key=${server.pki.clientKey}`,
        "--health-server-host=127.0.0.1",
        `--health-server-port=${healthPort}`,
        `--admin-server-port=${foundFreePort()}`,
        "--sync-interval=100ms",
        `--agent-id=${crypto.randomUUID()}`,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      await server.agents(1);
      assert.equal(await scenario(server, healthPort), EXPECTED);
    } finally {
      child.kill("SIGKILL");
      await child.status;
    }
  },
});
