/**
 * The binaries' start-up and bounds, through real processes: an occupied health or admin port
 * ends the process with exit code 1 and one line naming the flag and the address; idle sockets on
 * the health and admin ports and on the gRPC UDS frontend are closed by the server while
 * `/healthz` keeps answering; expired certificates are named on both sides.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { generateCa } from "../testing/certs.ts";
import { serverRunFlags } from "../server/permissions.ts";
import { agentPermissionFlags } from "../agent/permissions.ts";
import { type LogRecord, ManagedProcess, startAgent, startServer, testPki } from "./framework.ts";

/** A loopback port held open by this test process for the whole test. */
function occupiedPort(): Deno.TcpListener {
  return Deno.listen({ hostname: "127.0.0.1", port: 0 });
}

async function serverWith(flags: string[]): Promise<ManagedProcess> {
  const { files } = await testPki();
  const uds = join(await Deno.makeTempDir({ prefix: "knp-uds-" }), "s.sock");
  const all = [
    "--agent-port=0",
    "--agent-bind-address=127.0.0.1",
    "--health-port=0",
    "--health-bind-address=127.0.0.1",
    "--admin-port=0",
    `--cluster-cert=${files.serverCert}`,
    `--cluster-key=${files.serverKey}`,
    `--uds-name=${uds}`,
    "--server-port=0",
    ...flags,
  ];
  return new ManagedProcess("server", [
    "run",
    ...serverRunFlags(all),
    "server/main.ts",
    ...all,
  ]);
}

async function agentWith(flags: string[]): Promise<ManagedProcess> {
  const { files } = await testPki();
  const all = [
    "--proxy-server-host=127.0.0.1",
    "--proxy-server-port=1",
    `--ca-cert=${files.caCert}`,
    `--agent-cert=${files.clientCert}`,
    `--agent-key=${files.clientKey}`,
    "--health-server-port=0",
    "--health-server-host=127.0.0.1",
    "--admin-server-port=0",
    ...flags,
  ];
  return new ManagedProcess("agent", [
    "run",
    ...agentPermissionFlags(all),
    "agent/main.ts",
    ...all,
  ]);
}

const OCCUPIED: [string, (port: number) => Promise<ManagedProcess>, string][] = [
  ["server", (p) => serverWith([`--health-port=${p}`]), "--health-port"],
  ["server", (p) => serverWith([`--admin-port=${p}`]), "--admin-port"],
  ["agent", (p) => agentWith([`--health-server-port=${p}`]), "--health-server-port"],
  ["agent", (p) => agentWith([`--admin-server-port=${p}`]), "--admin-server-port"],
];

for (const [binary, start, flag] of OCCUPIED) {
  Deno.test(`${binary}: ${flag} already in use exits 1 with one line naming flag and address`, async () => {
    using held = occupiedPort();
    const port = held.addr.port;
    await using process = await start(port);
    const status = await process.status;
    assert.equal(status.code, 1, process.log);
    const errors = process.records.filter((r) => r.level === "error");
    assert.equal(errors.length, 1, process.log);
    const line = JSON.stringify(errors[0]);
    assert.ok(line.includes(`${flag}: cannot listen on 127.0.0.1:${port}`), line);
    assert.ok(!process.log.includes("kept running"), process.log);
  });
}

/** Opens `n` connections that send nothing; resolves once the peer has closed every one. */
async function idleSockets(
  n: number,
  connect: () => Promise<Deno.Conn>,
): Promise<() => Promise<void>> {
  const conns = await Promise.all(Array.from({ length: n }, connect));
  return async () => {
    await Promise.all(conns.map(async (conn) => {
      const buffer = new Uint8Array(1024);
      try {
        while (await conn.read(buffer) !== null) { /* the server may greet (HTTP/2 SETTINGS) */ }
      } catch { /* a reset is a close too */ }
      conn.close();
    }));
  };
}

const tcp = (port: number) => () => Deno.connect({ hostname: "127.0.0.1", port });

Deno.test("server: 200 idle sockets each on health, admin and the gRPC UDS are closed; /healthz answers", async () => {
  await using server = await startServer({
    extraArgs: ["--knp-http-timeout=1s", "--knp-frontend-idle-timeout=1s"],
  });
  const closed = await Promise.all([
    idleSockets(200, tcp(server.healthPort)),
    idleSockets(200, tcp(server.adminPort)),
    idleSockets(200, () => Deno.connect({ transport: "unix", path: server.udsPath })),
  ]);
  assert.equal(await server.status("/healthz"), 200);
  await Promise.all(closed.map((all) => all()));
  assert.equal(await server.status("/healthz"), 200);
});

Deno.test("agent: 200 idle sockets each on health and admin are closed; /healthz answers", async () => {
  await using server = await startServer();
  await using agent = await startAgent(server, { extraArgs: ["--knp-http-timeout=1s"] });
  const closed = await Promise.all([
    idleSockets(200, tcp(agent.healthPort)),
    idleSockets(200, tcp(agent.adminPort)),
  ]);
  const health = await fetch(`http://127.0.0.1:${agent.healthPort}/healthz`);
  assert.equal(await health.text(), "ok");
  await Promise.all(closed.map((all) => all()));
  const ready = await fetch(`http://127.0.0.1:${agent.healthPort}/readyz`);
  assert.equal(ready.status, 200);
  await ready.body?.cancel();
});

/** A cert/key pair of the shared test CA's sibling, valid in [notBefore, notAfter], on disk. */
async function expiredPki(which: "server" | "client", window: { notBefore: Date; notAfter: Date }) {
  const { files } = await testPki();
  const ca = await generateCa({ commonName: "knp-expiry-ca" });
  const bundle = await ca.issue({
    commonName: `expired-${which}`,
    ...(which === "server" ? { dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] } : {}),
    usage: which,
    ...window,
  });
  const dir = await Deno.makeTempDir({ prefix: "knp-expired-" });
  const paths = {
    cert: join(dir, `${which}.crt`),
    key: join(dir, `${which}.key`),
    ca: join(dir, "ca.crt"),
  };
  await Deno.writeTextFile(paths.cert, bundle.certPem);
  await Deno.writeTextFile(paths.key, bundle.keyPem);
  // The peer trusts both the shared CA and this one, so only the validity window can fail.
  await Deno.writeTextFile(paths.ca, (await Deno.readTextFile(files.caCert)) + ca.certPem);
  return { paths, dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

const DAY = 86_400_000;
const EXPIRED = {
  notBefore: new Date(Date.now() - 10 * DAY),
  notAfter: new Date(Date.now() - DAY),
};

const warnsAbout = (file: string, reason: string) => (r: LogRecord) =>
  r.level === "warn" && r.file === file && r.reason === reason && typeof r.notAfter === "string";

Deno.test("expired server certificate: the server warns naming it; the agent names the server's expiry", async () => {
  await using pki = await expiredPki("server", EXPIRED);
  await using server = await startServer({
    extraArgs: [`--cluster-cert=${pki.paths.cert}`, `--cluster-key=${pki.paths.key}`],
  });
  await server.process.waitForLog(warnsAbout(pki.paths.cert, "expired"));
  await using agent = await startAgent(server, {
    waitReady: false,
    extraArgs: [`--ca-cert=${pki.paths.ca}`],
  });
  const failure = await agent.process.waitForLog("cannot connect to proxy server");
  const error = String(failure.error);
  assert.match(
    error,
    new RegExp(`server 127\\.0\\.0\\.1:${server.agentPort}: CN=expired-server expired at 20`),
  );
});

Deno.test("expired agent certificate: the agent warns at start and names it when the server hangs up; the server names it too", async () => {
  await using pki = await expiredPki("client", EXPIRED);
  await using server = await startServer({ extraArgs: [`--cluster-ca-cert=${pki.paths.ca}`] });
  await using agent = await startAgent(server, {
    waitReady: false,
    extraArgs: [`--agent-cert=${pki.paths.cert}`, `--agent-key=${pki.paths.key}`],
  });
  await agent.process.waitForLog(warnsAbout(pki.paths.cert, "expired"));
  const failure = await agent.process.waitForLog("cannot connect to proxy server");
  assert.match(
    String(failure.error),
    new RegExp(`this agent's certificate ${pki.paths.cert} expired at 20.*the server rejects it`),
  );
  // The server that refused it says whose certificate expired and when, and names the peer.
  const rejected = await server.process.waitForLog("agent refused");
  assert.match(String(rejected.peer), /^127\.0\.0\.1:\d+$/);
  assert.equal(rejected.reason, "unauthenticated");
  assert.match(String(rejected.error), /agent certificate "CN=[^"]+" expired at 20\d\d-/);
});

Deno.test("a server certificate not valid yet is named at start", async () => {
  await using pki = await expiredPki("server", {
    notBefore: new Date(Date.now() + DAY),
    notAfter: new Date(Date.now() + 10 * DAY),
  });
  await using server = await startServer({
    extraArgs: [`--cluster-cert=${pki.paths.cert}`, `--cluster-key=${pki.paths.key}`],
  });
  await server.process.waitForLog(warnsAbout(pki.paths.cert, "not yet valid"));
});
