// deno-lint-ignore-file no-console -- reports skipped groups
/**
 * High availability with real processes: three knp servers (`--server-count=3`, distinct
 * `--server-id`) behind a real haproxy in TCP round-robin mode, and knp agents connecting
 * through it. Every agent reaches every server and each server proxies; a server stopped leaves
 * the agents on 2; a new server on its port brings them back to 3 without a restart; the
 * HyperShift sequence (a server vanishes without closing its connections, its replacement
 * comes up with the same server ID) ends with every agent on 3 within 30 s with default liveness
 * flags. Beyond upstream: `--proxy-server-host` as a list of addresses, each connected directly.
 * With `KNP_UPSTREAM_SERVER` / `KNP_UPSTREAM_AGENT`, a mixed fleet has upstream's Go server and
 * agent in it.
 *
 * Needs `haproxy` on PATH (`.ci/run` installs it); without it the haproxy tests are skipped,
 * unless `KNP_E2E_REQUIRED=1`, which makes them fail instead.
 *
 * @module
 */

import assert from "node:assert/strict";
import { generateTestPki, writeTestPki } from "../testing/certs.ts";
import { startHttpBackend } from "./backends.ts";
import {
  AGENT_LINKS,
  type AgentLink,
  eventually,
  foundFreePort,
  type ServerProcess,
  startAgent,
  startServer,
  testPki,
} from "./framework.ts";
import {
  awaitHeld,
  getThrough,
  heldServers,
  startFleetServer,
  startUpstreamAgent,
  startUpstreamServer,
  UPSTREAM,
} from "./ha/fleet.ts";
import { haveHaproxy, startHaproxy } from "./ha/haproxy.ts";
import { grpcConnector } from "../agent/grpc_connector.ts";
import { webSocketConnector } from "../agent/ws_connector.ts";

const HAPROXY = await haveHaproxy();
const REQUIRED = Deno.env.get("KNP_E2E_REQUIRED") === "1";
if (!HAPROXY) {
  console.log(
    REQUIRED
      ? "haproxy is not on PATH and KNP_E2E_REQUIRED=1: the haproxy tests fail"
      : "skipping the haproxy tests: haproxy is not on PATH (apt-get install haproxy)",
  );
}
const ignoreHaproxy = !HAPROXY && !REQUIRED;

function requireHaproxy(): void {
  if (!HAPROXY) throw new Error("haproxy is not on PATH (KNP_E2E_REQUIRED=1)");
}

/** The agent flags of a link through haproxy's frontend `port`. */
function linkArgs(link: AgentLink, port: number): string[] {
  return link === "websocket" ? [`--knp-websocket-port=${port}`] : [];
}

/** The port of `server` haproxy forwards to for `link`. */
function portOf(server: ServerProcess, link: AgentLink): number {
  return link === "websocket" ? server.websocketPort : server.agentPort;
}

for (const link of AGENT_LINKS) {
  Deno.test({
    name: `ha (${link}): 3 servers behind haproxy; every agent holds 3, each proxies; ` +
      "one stopped → 2; a new one on its port → 3 without restart",
    ignore: ignoreHaproxy,
    async fn() {
      requireHaproxy();
      await using backend = startHttpBackend();
      await using s1 = await startFleetServer("s1", { link });
      await using s2 = await startFleetServer("s2", { link });
      await using s3 = await startFleetServer("s3", { link }); // disposed early; twice is safe
      await using lb = await startHaproxy(
        [s1, s2, s3].map((s, i) => ({ name: `s${i + 1}`, port: portOf(s, link) })),
      );
      const front = lb.ports[0]!;
      await using a1 = await startAgent(front, { extraArgs: linkArgs(link, front) });
      await using a2 = await startAgent(front, { extraArgs: linkArgs(link, front) });
      const agents = [a1, a2];
      for (const a of agents) await awaitHeld(a.process, ["s1", "s2", "s3"]);
      for (const s of [s1, s2, s3]) {
        await s.agents(2);
        await getThrough(s.udsPath, backend.address);
      }

      await s3[Symbol.asyncDispose](); // stopped: its connections close
      for (const a of agents) await awaitHeld(a.process, ["s1", "s2"]);

      await using s4 = await startFleetServer("s4", {
        link,
        agentPort: s3.agentPort,
        websocketPort: s3.websocketPort,
      });
      // --sync-interval=100ms, cap 1s: well within the default failure deadline.
      for (const a of agents) await awaitHeld(a.process, ["s1", "s2", "s4"], { timeoutMs: 15_000 });
      await s4.agents(2);
      await getThrough(s4.udsPath, backend.address);
    },
  });
}

/**
 * The HyperShift sequence: s3 vanishes without closing its connections (SIGSTOP, its haproxy slot
 * taken out), its replacement comes up with the same server ID on a spare slot.
 */
async function hyperShift(link: AgentLink, variant: "pings" | "sync-forever"): Promise<void> {
  requireHaproxy();
  await using backend = startHttpBackend();
  await using s1 = await startFleetServer("s1", { link });
  await using s2 = await startFleetServer("s2", { link });
  const s3 = await startFleetServer("s3", { link });
  const sparePort = foundFreePort();
  await using lb = await startHaproxy([
    { name: "s1", port: portOf(s1, link) },
    { name: "s2", port: portOf(s2, link) },
    { name: "s3", port: portOf(s3, link) },
    { name: "spare", port: sparePort, disabled: true },
  ]);
  const front = lb.ports[0]!;
  // Upstream's sync defaults and knp's default liveness flags (the framework's are faster);
  // or no periodic probe at all and --sync-forever, where only the probe of a held
  // connection on a duplicate finds the stale one.
  const defaults = [
    "--sync-interval=1s",
    "--sync-interval-cap=10s",
    "--probe-interval=1s",
    ...(variant === "sync-forever" ? ["--sync-forever", "--knp-server-ping-interval=1h"] : []),
    ...linkArgs(link, front),
  ];
  await using a1 = await startAgent(front, { extraArgs: defaults });
  await using a2 = await startAgent(front, { extraArgs: defaults });
  const agents = [a1, a2];
  try {
    for (const a of agents) await awaitHeld(a.process, ["s1", "s2", "s3"]);

    // The node is lost: s3 stops answering, its TCP connections stay open, and its endpoint
    // goes away (haproxy's slot taken out, as Kubernetes drops the endpoint).
    s3.process.kill("SIGSTOP");
    const down = lb.mark();
    assert.match(await lb.command("disable server b0/s3"), /^$/);
    await lb.waitFor("Server b0/s3 is going DOWN for maintenance", down);

    const marks = agents.map((a) => a.process.mark());
    const started = performance.now();
    await using replacement = await startFleetServer(
      "s3",
      link === "websocket" ? { link, websocketPort: sparePort } : { agentPort: sparePort },
    );
    const up = lb.mark();
    await lb.command("enable server b0/spare");
    await lb.waitFor("Server b0/spare is UP", up);
    // Failure deadline: 30 s from the replacement's start (the bound).
    await Promise.all(agents.map((a, i) =>
      awaitHeld(a.process, ["s1", "s2", "s3"], {
        fresh: "s3",
        since: marks[i]!,
        timeoutMs: 30_000,
      })
    ));
    const ms = Math.round(performance.now() - started);
    console.log(
      `HyperShift (${link}, ${variant}): every agent on 3 servers ${ms} ms after the ` +
        "replacement started",
    );
    for (const a of agents) {
      const dropped = a.process.records.slice(marks[agents.indexOf(a)]!).find((r) =>
        (variant === "pings" &&
          r.msg === "proxy server answered no liveness probe; dropping the connection") ||
        r.msg === "replacing stale connection to proxy server"
      );
      assert.ok(dropped, "the stale connection to s3 was dropped by a failed probe");
    }
    await replacement.agents(2);
    await getThrough(replacement.udsPath, backend.address);
  } finally {
    await s3[Symbol.asyncDispose](); // SIGKILL ends a stopped process too
  }
}

for (
  const [link, variant] of [
    ["grpc", "pings"],
    ["websocket", "pings"],
    ["grpc", "sync-forever"],
  ] as const
) {
  Deno.test({
    name: `ha (${link}, ${variant}): HyperShift — a server vanishes without closing its ` +
      "connections, its replacement (same server ID) comes up; every agent holds 3 again " +
      "within 30 s",
    ignore: ignoreHaproxy,
    fn: () => hyperShift(link, variant),
  });
}

for (const link of AGENT_LINKS) {
  Deno.test(`ha (${link}): --proxy-server-host as a list of addresses: the agent connects to each directly`, async () => {
    // 127.0.0.1/.2/.3 share one port on Linux loopback; their certificate names the three IPs.
    const dir = await Deno.makeTempDir({ prefix: "knp-ha-pki-" });
    const hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    const files = await writeTestPki(dir, await generateTestPki({ ipAddresses: hosts }));
    const port = foundFreePort();
    const wsPort = foundFreePort();
    const tls = [
      `--cluster-cert=${files.serverCert}`,
      `--cluster-key=${files.serverKey}`,
      `--cluster-ca-cert=${files.caCert}`,
    ];
    const servers: ServerProcess[] = [];
    try {
      for (const [i, host] of hosts.entries()) {
        servers.push(
          await startFleetServer(`s${i + 1}`, {
            link,
            agentPort: port,
            websocketPort: link === "websocket" ? wsPort : 0,
            extraArgs: [`--agent-bind-address=${host}`, ...tls],
          }),
        );
      }
      await using backend = startHttpBackend();
      await using agent = await startAgent(port, {
        extraArgs: [
          `--proxy-server-host=${hosts.join(",")}`,
          `--ca-cert=${files.caCert}`,
          `--agent-cert=${files.clientCert}`,
          `--agent-key=${files.clientKey}`,
          ...(link === "websocket" ? [`--knp-websocket-port=${wsPort}`] : []),
        ],
      });
      await awaitHeld(agent.process, ["s1", "s2", "s3"]);
      const connected = agent.process.records.filter((r) => r.msg === "connected to proxy server");
      assert.deepEqual(
        connected.map((r) => r["address"]).sort(),
        hosts,
        "one connection per address, no duplicate roulette",
      );
      for (const s of servers) await getThrough(s.udsPath, backend.address);
    } finally {
      for (const s of servers) await s[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  });
}

for (const link of AGENT_LINKS) {
  Deno.test(`ha (${link}): a resolved address is verified as the configured name, not the address`, async () => {
    // What `--proxy-server-host=<name with several records>` hands the connector: an address
    // and the name. The test certificate names localhost and 127.0.0.1, not "elsewhere.test".
    await using server = await startServer({ link });
    const { files } = await testPki();
    const tls = {
      ca: await Deno.readFile(files.caCert),
      cert: await Deno.readFile(files.clientCert),
      key: await Deno.readFile(files.clientKey),
    };
    const common = { host: "unused.invalid", agentId: "tls-name", agentIdentifiers: "", tls };
    const connect = link === "websocket"
      ? webSocketConnector({ ...common, port: server.websocketPort })
      : grpcConnector({ ...common, port: server.agentPort });
    const good = await connect({ host: "127.0.0.1", serverName: "localhost" });
    assert.equal(good.serverId, "test-server");
    good.stream.close();
    good.close();
    await assert.rejects(connect({ host: "127.0.0.1", serverName: "elsewhere.test" }));
  });
}

Deno.test({
  name: "ha: mixed fleet behind haproxy — upstream's server and agent among knp's",
  ignore: ignoreHaproxy || (!UPSTREAM.server && !UPSTREAM.agent),
  // Upstream's processes are polled (their state is in /metrics only); no sanitizer run yet.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    requireHaproxy();
    await using backend = startHttpBackend();
    await using s1 = await startFleetServer("s1");
    await using s2 = await startFleetServer("s2");
    await using s3 = UPSTREAM.server
      ? await startUpstreamServer("u3")
      : await startFleetServer("s3");
    const third = UPSTREAM.server ? "u3" : "s3";
    await using lb = await startHaproxy([
      { name: "s1", port: s1.agentPort },
      { name: "s2", port: s2.agentPort },
      { name: "s3", port: s3.agentPort },
    ]);
    const front = lb.ports[0]!;
    // Fast liveness probes, so several reach the upstream server during the test.
    await using agent = await startAgent(front, {
      extraArgs: ["--knp-server-ping-interval=500ms", "--knp-server-ping-timeout=2s"],
    });
    await using goAgent = UPSTREAM.agent ? await startUpstreamAgent(front) : undefined;
    await awaitHeld(agent.process, ["s1", "s2", third]);
    if (goAgent) {
      await eventually(
        async () => (await goAgent.openServerConnections()) === 3,
        "upstream's agent holding 3 servers",
        30_000,
      );
    }
    if (UPSTREAM.server) {
      // Upstream answers knp's liveness probe (DATA for an unknown connectID) with CLOSE_REQ.
      const u = s3 as Awaited<ReturnType<typeof startUpstreamServer>>;
      // Eight probes at 0.5 s of silence each outlast the 2 s timeout: an answer the agent did
      // not recognise would have dropped u3 by then.
      await u.process.waitForText("could not get frontend client; closing connection", 8);
      assert.ok(heldServers(agent.process.records).has("u3"), "the probed upstream server stays");
      const dropped = agent.process.records.filter((r) =>
        r.msg === "proxy server answered no liveness probe; dropping the connection"
      );
      assert.deepEqual(dropped, [], "no server failed a probe");
    }
    for (const s of [s1, s2, s3]) await getThrough(s.udsPath, backend.address);
    assert.equal(heldServers(agent.process.records).size, 3);
  },
});

Deno.test("ha: a knp server answers the agent's liveness probes; the connection stays", async () => {
  await using s = await startServer({ extraArgs: ["--server-count=3", "--server-id=solo"] });
  await using agent = await startAgent(s, {
    extraArgs: ["--v=5", "--knp-server-ping-interval=200ms", "--knp-server-ping-timeout=1s"],
  });
  const record = await agent.process.waitForLog("connected to proxy server");
  assert.equal(record["serverID"], "solo");
  assert.equal(record["serverCount"], 3);
  // Eight probes 0.2 s apart outlast the 1 s timeout: an unrecognised answer would have dropped
  // the connection by then.
  await agent.process.waitForState(
    (records) => records.filter((r) => r.msg === "liveness probe answered")[7],
    "eight answered liveness probes",
  );
  const dropped = agent.process.records.filter((r) =>
    r.msg === "proxy server answered no liveness probe; dropping the connection" ||
    r.msg === "lost connection to proxy server"
  );
  assert.deepEqual(dropped, []);
});
