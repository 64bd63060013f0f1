// deno-lint-ignore-file no-console -- reports skipped groups and measured numbers
/**
 * Mixed fleets: our proxy-server with upstream's Go proxy-agent (group A), and upstream's Go
 * proxy-server with our proxy-agent (group B), with our client library as the frontend.
 *
 * The upstream binaries are not part of this repository. Give their absolute paths in
 * `KNP_UPSTREAM_AGENT` (proxy-agent) and `KNP_UPSTREAM_SERVER` (proxy-server); a group whose
 * variable is unset is ignored. Everything listens on and dials 127.0.0.1 only. When
 * `KNP_UPSTREAM_LOG_DIR` names a directory, every process's log is written there at the end.
 *
 * @module
 */

import assert from "node:assert/strict";
import { havePython, startBlackhole } from "./connect_client.ts";
import { createSingleUseTunnel, createTunnel, DialError, type TunnelConn } from "@knp/client";
import { readSample } from "../server/metrics.ts";
import { checksum, firstMismatch, pattern, startHttpBackend } from "./backends.ts";
import {
  awaitTables,
  CLOSED_PORT,
  eventually,
  foundFreePort,
  type ServerProcess,
  startAgent,
  startServer,
  testPki,
} from "./framework.ts";
import { httpRequest } from "./http_client.ts";

const UPSTREAM_AGENT = Deno.env.get("KNP_UPSTREAM_AGENT");
const UPSTREAM_SERVER = Deno.env.get("KNP_UPSTREAM_SERVER");
const LOG_DIR = Deno.env.get("KNP_UPSTREAM_LOG_DIR");

if (!UPSTREAM_AGENT) {
  console.log(
    "skipping 'our server + upstream proxy-agent': KNP_UPSTREAM_AGENT (absolute path of an upstream proxy-agent binary) is not set",
  );
}
if (!UPSTREAM_SERVER) {
  console.log(
    "skipping 'upstream proxy-server + our agent': KNP_UPSTREAM_SERVER (absolute path of an upstream proxy-server binary) is not set",
  );
}

// Not run in CI here (the upstream binaries are absent), so the sanitizers stay off until a run
// with KNP_UPSTREAM_AGENT/KNP_UPSTREAM_SERVER confirms these tests leak nothing.
const opts = { sanitizeOps: false, sanitizeResources: false };
const MiB = 1 << 20;
const decoder = new TextDecoder();

// ---------------------------------------------------------------------------------------------
// Helpers

/**
 * Polls `url` until it answers `status`: upstream's binaries log in klog text, with no line this
 * suite can rely on for the moment their health endpoints come up.
 */
async function pollHttp(url: string, status: number, timeoutMs: number): Promise<void> {
  await eventually(
    async () => (await statusOf(url)) === status,
    `${url} to answer ${status}`,
    timeoutMs,
  );
}

/** An upstream binary as a child process, its klog output captured. */
class UpstreamProcess implements AsyncDisposable {
  readonly name: string;
  readonly child: Deno.ChildProcess;
  readonly status: Promise<Deno.CommandStatus>;
  #log: string[] = [];
  #waiters: { text: string; resolve: () => void }[] = [];

  constructor(name: string, binary: string, args: string[]) {
    this.name = name;
    this.child = new Deno.Command(binary, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#drain(this.child.stdout);
    this.#drain(this.child.stderr);
    this.status = this.child.status;
  }

  async #drain(stream: ReadableStream<Uint8Array>): Promise<void> {
    const d = new TextDecoder();
    for await (const chunk of stream) {
      this.#log.push(d.decode(chunk, { stream: true }));
      const log = this.log;
      this.#waiters = this.#waiters.filter((w) => !log.includes(w.text) || (w.resolve(), false));
    }
  }

  get log(): string {
    return this.#log.join("");
  }

  /** Resolves once the log contains `text` (resolved by the reader; no polling). */
  waitForText(text: string): Promise<void> {
    if (this.log.includes(text)) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#waiters.push({ text, resolve });
    return promise;
  }

  kill(signal: Deno.Signal = "SIGTERM"): void {
    try {
      this.child.kill(signal);
    } catch { /* already gone */ }
  }

  async stop(): Promise<Deno.CommandStatus> {
    this.kill("SIGKILL");
    return await this.status;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** Something with a captured log, for failure reports. */
interface Logged {
  name: string;
  readonly log: string;
}

function tail(p: Logged, lines = 40): string {
  const all = p.log.trimEnd().split("\n");
  return `--- ${p.name} log (last ${Math.min(lines, all.length)} of ${all.length} lines) ---\n` +
    all.slice(-lines).join("\n");
}

/** Writes the logs to `KNP_UPSTREAM_LOG_DIR` when it is set. */
async function saveLogs(prefix: string, procs: Logged[]): Promise<void> {
  if (!LOG_DIR) return;
  await Deno.mkdir(LOG_DIR, { recursive: true });
  for (const [i, p] of procs.entries()) {
    const file = `${LOG_DIR}/${prefix}-${i}-${p.name.replaceAll(/[^a-z0-9]+/gi, "-")}.log`;
    await Deno.writeTextFile(file, p.log);
  }
}

/** klog error lines (`E1121 10:36:52.959998 ...`) of an upstream process. */
function klogErrors(p: Logged): string[] {
  return p.log.split("\n").filter((l) => /^E\d{4} /.test(l));
}

/** Runs a step; on failure, rethrows with the tails of the processes' logs attached. */
async function step(
  t: Deno.TestContext,
  name: string,
  procs: () => Logged[],
  fn: () => Promise<void>,
): Promise<void> {
  await t.step(name, async () => {
    const started = performance.now();
    try {
      await fn();
    } catch (err) {
      const logs = procs().map((p) => tail(p)).join("\n");
      throw new Error(`${err instanceof Error ? err.stack ?? err.message : err}\n${logs}`, {
        cause: err,
      });
    }
    console.log(`  [${name}] ${Math.round(performance.now() - started)} ms`);
  });
}

/** Rejects when `promise` takes longer than `ms`. */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** One sample from `http://127.0.0.1:<port>/metrics`. */
async function scrape(port: number, series: string): Promise<number | undefined> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  return readSample(await res.text(), series);
}

async function statusOf(url: string): Promise<number> {
  try {
    const res = await fetch(url);
    await res.body?.cancel();
    return res.status;
  } catch {
    return 0;
  }
}

async function getSuccess(udsPath: string, address: string): Promise<void> {
  const conn = await createSingleUseTunnel({ udsPath }).dial("tcp", address);
  const res = await within(15_000, "GET /success", httpRequest(conn, "GET", "/success"));
  assert.equal(res.status, 200);
  assert.equal(decoder.decode(res.body), "hello");
}

async function dialClosedPort(udsPath: string): Promise<void> {
  const err = await createSingleUseTunnel({ udsPath }).dial("tcp", `127.0.0.1:${CLOSED_PORT}`)
    .catch((e) => e);
  assert.ok(err instanceof DialError, String(err));
  assert.equal(err.reason, "endpoint");
  assert.match(err.message, /connection refused/);
  console.log(`    dial error text: ${JSON.stringify(err.message)}`);
}

async function concurrentEcho(udsPath: string, address: string, n: number): Promise<void> {
  const results = await within(
    30_000,
    `${n} concurrent echoes`,
    Promise.all(Array.from({ length: n }, async (_, i) => {
      const conn = await createSingleUseTunnel({ udsPath }).dial("tcp", address);
      const body = new TextEncoder().encode(`request-${i}-${"x".repeat(i * 100)}`);
      const res = await httpRequest(conn, "POST", "/echo", body);
      assert.equal(res.status, 200);
      return decoder.decode(res.body);
    })),
  );
  results.forEach((got, i) => assert.equal(got, `request-${i}-${"x".repeat(i * 100)}`));
}

/** Several dials over one gRPC connection (one Proxy stream each), used in turn and together. */
async function reusableTunnel(udsPath: string, address: string, n: number): Promise<void> {
  await using tunnel = createTunnel({ udsPath });
  const conns = await Promise.all(Array.from({ length: n }, () => tunnel.dial("tcp", address)));
  const results = await within(
    15_000,
    `${n} requests over one tunnel`,
    Promise.all(
      conns.map((conn, i) =>
        httpRequest(conn, "POST", "/echo", new TextEncoder().encode(`stream-${i}`))
      ),
    ),
  );
  results.forEach((r, i) => assert.equal(decoder.decode(r.body), `stream-${i}`));
  const again = await tunnel.dial("tcp", address);
  const res = await within(15_000, "GET after the others", httpRequest(again, "GET", "/success"));
  assert.equal(decoder.decode(res.body), "hello");
}

/** Counts lines of the upstream agent's log that mark an established endpoint connection. */
function upstreamDials(p: Logged): number {
  return p.log.split("\n").filter((l) => l.includes('"Endpoint connection established"')).length;
}

/**
 * Starts a 1 GiB download, kills the agent after 2 MiB arrived and measures how soon the client's
 * connection ends. Returns the outcome text and the milliseconds from the kill to the end.
 */
async function killAgentMidDownload(
  udsPath: string,
  address: string,
  kill: () => Promise<unknown>,
): Promise<{ outcome: string; ms: number; received: number; closeError: string }> {
  const total = 1024 * MiB;
  const conn: TunnelConn = await createSingleUseTunnel({ udsPath }).dial("tcp", address);
  const writer = conn.writable.getWriter();
  await writer.write(
    new TextEncoder().encode(
      `GET /download?chunks=1024&size=${MiB} HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n`,
    ),
  );
  writer.releaseLock();
  const reader = conn.readable.getReader();
  let received = 0;
  while (received < 2 * MiB) {
    const { value, done } = await within(15_000, "first 2 MiB", reader.read());
    if (done) throw new Error(`ended after ${received} bytes, before the kill`);
    received += value.length;
  }
  const killedAt = performance.now();
  await kill();
  let outcome = "EOF";
  try {
    await within(
      10_000,
      "the end of the download after the agent died",
      (async () => {
        while (true) {
          const { value, done } = await reader.read();
          if (done) return;
          received += value.length;
        }
      })(),
    );
  } catch (err) {
    if (err instanceof Error && err.message.includes("no result within")) throw err;
    outcome = `error: ${err instanceof Error ? err.message : err}`;
  }
  const ms = performance.now() - killedAt;
  console.log(
    `    client saw ${outcome} ${
      Math.round(ms)
    } ms after SIGKILL, ${received} of ${total} bytes, ` +
      `closeError=${JSON.stringify(conn.closeError)}`,
  );
  assert.ok(received < total, "the download cannot have completed");
  // Ended by the agent's death reaching the client, not by some timer on the way.
  assert.doesNotMatch(
    `${outcome} ${conn.closeError}`,
    /time(d)? ?out|deadline|keepalive/i,
    "the connection ended because the agent died",
  );
  await within(5_000, "conn.closed", conn.closed);
  return { outcome, ms, received, closeError: conn.closeError };
}

async function download(udsPath: string, address: string, mib: number): Promise<number> {
  const conn = await createSingleUseTunnel({ udsPath }).dial("tcp", address);
  const started = performance.now();
  const res = await within(
    60_000,
    `${mib} MiB download`,
    httpRequest(conn, "GET", `/download?chunks=${mib}&size=${MiB}`),
  );
  const ms = performance.now() - started;
  assert.equal(res.status, 200);
  assert.equal(res.body.length, mib * MiB);
  assert.equal(firstMismatch(res.body), -1);
  return ms;
}

async function upload(udsPath: string, address: string, mib: number): Promise<number> {
  const body = pattern(0, mib * MiB);
  const sum = checksum(body);
  const conn = await createSingleUseTunnel({ udsPath }).dial("tcp", address);
  const started = performance.now();
  const res = await within(60_000, `${mib} MiB upload`, httpRequest(conn, "POST", "/upload", body));
  const ms = performance.now() - started;
  assert.equal(decoder.decode(res.body), `${body.length} ${sum.a}:${sum.b}`);
  return ms;
}

function rate(mib: number, ms: number): string {
  return `${Math.round(ms)} ms (${(mib / (ms / 1000)).toFixed(1)} MiB/s)`;
}

// ---------------------------------------------------------------------------------------------
// Upstream processes

interface UpstreamAgent extends AsyncDisposable {
  process: UpstreamProcess;
  healthPort: number;
  adminPort: number;
}

/** Starts upstream's proxy-agent against `agentPort` on 127.0.0.1; waits for its /readyz. */
async function startUpstreamAgent(agentPort: number, agentId: string): Promise<UpstreamAgent> {
  const { files } = await testPki();
  const healthPort = foundFreePort();
  const adminPort = foundFreePort();
  const process = new UpstreamProcess("upstream proxy-agent", UPSTREAM_AGENT!, [
    "--proxy-server-host=127.0.0.1",
    `--proxy-server-port=${agentPort}`,
    `--ca-cert=${files.caCert}`,
    `--agent-cert=${files.clientCert}`,
    `--agent-key=${files.clientKey}`,
    "--health-server-host=127.0.0.1",
    `--health-server-port=${healthPort}`,
    "--admin-bind-address=127.0.0.1",
    `--admin-server-port=${adminPort}`,
    `--agent-id=${agentId}`,
    "--sync-interval=100ms",
    "--sync-interval-cap=1s",
    "--probe-interval=100ms",
  ]);
  try {
    await Promise.race([
      pollHttp(`http://127.0.0.1:${healthPort}/readyz`, 200, 20_000),
      process.status.then((s) => {
        throw new Error(`upstream proxy-agent exited early with ${s.code}`);
      }),
    ]);
  } catch (err) {
    await process.stop();
    throw new Error(`${err}\n${tail(process, 80)}`);
  }
  return {
    process,
    healthPort,
    adminPort,
    async [Symbol.asyncDispose]() {
      await process.stop();
    },
  };
}

interface UpstreamServer extends AsyncDisposable {
  process: UpstreamProcess;
  /** The frontend's UDS path ("" with a TCP frontend). */
  udsPath: string;
  /** The TCP frontend's port (0 with a UDS frontend). */
  serverPort: number;
  agentPort: number;
  healthPort: number;
  adminPort: number;
}

/**
 * Starts upstream's proxy-server: gRPC frontend on a UDS (default) or on 127.0.0.1 TCP with
 * mTLS, agent port with mTLS on 127.0.0.1.
 */
async function startUpstreamServer(
  agentPort: number,
  frontend: "uds" | "tcp" = "uds",
): Promise<UpstreamServer> {
  const { files } = await testPki();
  const dir = await Deno.makeTempDir({ prefix: "knp-upstream-" });
  const udsPath = frontend === "uds" ? `${dir}/s.sock` : "";
  const serverPort = frontend === "tcp" ? foundFreePort() : 0;
  const healthPort = foundFreePort();
  const adminPort = foundFreePort();
  const process = new UpstreamProcess(`upstream proxy-server (${frontend})`, UPSTREAM_SERVER!, [
    "--mode=grpc",
    ...(frontend === "uds" ? [`--uds-name=${udsPath}`, "--server-port=0"] : [
      `--server-port=${serverPort}`,
      "--server-bind-address=127.0.0.1",
      `--server-cert=${files.serverCert}`,
      `--server-key=${files.serverKey}`,
      `--server-ca-cert=${files.caCert}`,
    ]),
    `--agent-port=${agentPort}`,
    "--agent-bind-address=127.0.0.1",
    `--health-port=${healthPort}`,
    "--health-bind-address=127.0.0.1",
    `--admin-port=${adminPort}`,
    "--admin-bind-address=127.0.0.1",
    `--cluster-cert=${files.serverCert}`,
    `--cluster-key=${files.serverKey}`,
    `--cluster-ca-cert=${files.caCert}`,
    "--server-id=upstream-server",
    "--server-count=1",
  ]);
  try {
    await Promise.race([
      (async () => {
        await pollHttp(`http://127.0.0.1:${healthPort}/healthz`, 200, 20_000);
        if (frontend === "uds") {
          await eventually(
            () => Deno.stat(udsPath).then(() => true, () => false),
            "the upstream server's UDS",
          );
        }
      })(),
      process.status.then((s) => {
        throw new Error(`upstream proxy-server exited early with ${s.code}`);
      }),
    ]);
  } catch (err) {
    await process.stop();
    throw new Error(`${err}\n${tail(process, 80)}`);
  }
  return {
    process,
    udsPath,
    serverPort,
    agentPort,
    healthPort,
    adminPort,
    async [Symbol.asyncDispose]() {
      await process.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

// ---------------------------------------------------------------------------------------------
// A. Our proxy-server + upstream proxy-agent

async function serverMetric(server: ServerProcess, series: string): Promise<number> {
  return await scrape(server.healthPort, series) ?? 0;
}

const SERVER_PENDING = "konnectivity_network_proxy_server_pending_backend_dials";
const SERVER_ESTABLISHED = "konnectivity_network_proxy_server_established_connections";
const SERVER_PROXY_STREAMS =
  'konnectivity_network_proxy_server_grpc_connections{service_method="Proxy"}';
const AGENT_OPEN_ENDPOINTS = "konnectivity_network_proxy_agent_open_endpoint_connections";
const dialFailures = (reason: string) =>
  `konnectivity_network_proxy_server_dial_failure_count{reason="${reason}"}`;

/**
 * klog error lines that the scenarios cause on purpose (a refused dial, a cancelled dial, a
 * SIGTERM'd server, a SIGKILL'd peer). Any other upstream error line fails the group: lines such
 * as "Received packet missing ConnectID", "Data does not match first connection id", "Invalid
 * backend", "Unrecognized dial cancelled", "drain failure" or an unmarshal error would mean our
 * side sent something upstream did not expect.
 */
const EXPECTED_KLOG_ERRORS = [
  /"DIAL_RSP contains failure" err="dial tcp [^"]*: (connect: connection refused|i\/o timeout)"/,
  /"Dial cancelled \(DIAL_CLS\) by frontend"/,
  /"(admin|health) server could not listen" err="http: Server closed"/,
  /"(Receive stream from agent|Stream read from frontend) (read )?failure" err="rpc error: code = (Canceled|Unavailable) /,
];

function unexpectedKlogErrors(procs: Logged[]): string[] {
  return procs.flatMap((p) =>
    klogErrors(p).filter((l) => !EXPECTED_KLOG_ERRORS.some((re) => re.test(l))).map((l) =>
      `${p.name}: ${l}`
    )
  );
}

Deno.test({
  name: "A: our proxy-server + upstream proxy-agent",
  ignore: !UPSTREAM_AGENT,
  ...opts,
  async fn(t) {
    await using backend = startHttpBackend();
    // Debug level: our server logs every change of its connection tables (awaited below).
    await using server = await startServer({ extraArgs: ["--v=5"] });
    const upstreamAgents: UpstreamAgent[] = [];
    const newAgent = async () => {
      const a = await startUpstreamAgent(server.agentPort, "upstream-agent-1");
      upstreamAgents.push(a);
      return a;
    };
    let agent = await newAgent();
    const procs = () => [server.process, agent.process];
    const bothSidesIdle = async () => {
      await awaitTables(
        server.process,
        (g) => g.established === 0 && g.pending === 0,
        "no established/pending connection on our server",
      );
      assert.equal(await serverMetric(server, SERVER_ESTABLISHED), 0);
      assert.equal(await serverMetric(server, SERVER_PENDING), 0);
      // The upstream agent logs nothing this suite can rely on when an endpoint closes: poll it.
      await eventually(
        async () => await scrape(agent.healthPort, AGENT_OPEN_ENDPOINTS) === 0,
        "no open endpoint on the upstream agent",
      );
    };
    try {
      await step(t, "A1 our server is ready once the upstream agent connects", procs, async () => {
        await server.agents(1);
        assert.equal(await server.status("/readyz"), 200);
        assert.equal(
          await serverMetric(
            server,
            'konnectivity_network_proxy_server_grpc_connections{service_method="Connect"}',
          ),
          1,
        );
        assert.equal(
          await scrape(
            agent.healthPort,
            "konnectivity_network_proxy_agent_open_server_connections",
          ),
          1,
        );
        assert.equal(
          await scrape(agent.healthPort, "konnectivity_network_proxy_agent_known_server_count"),
          1,
        );
      });

      await step(t, "A2 GET /success through our client over the UDS", procs, async () => {
        await getSuccess(server.udsPath, backend.address);
        await bothSidesIdle();
      });

      await step(t, "A3 dial to a closed port gives connection refused", procs, async () => {
        const before = await serverMetric(server, dialFailures("error_response"));
        await dialClosedPort(server.udsPath);
        assert.equal(await serverMetric(server, dialFailures("error_response")), before + 1);
      });

      await step(t, "A4 20 concurrent tunnels each echo their own body", procs, async () => {
        await concurrentEcho(server.udsPath, backend.address, 20);
        await bothSidesIdle();
      });

      await step(t, "A5 10 MiB download byte-exact", procs, async () => {
        const ms = await download(server.udsPath, backend.address, 10);
        console.log(`    10 MiB download: ${rate(10, ms)}`);
      });

      await step(t, "A6 10 MiB upload byte-exact", procs, async () => {
        const ms = await upload(server.udsPath, backend.address, 10);
        console.log(`    10 MiB upload: ${rate(10, ms)}`);
        await bothSidesIdle();
      });

      await step(t, "A7 5 dials over one gRPC connection (createTunnel)", procs, async () => {
        await reusableTunnel(server.udsPath, backend.address, 5);
        await bothSidesIdle();
      });

      if (havePython) {
        await step(t, "A8 a cancelled pending dial leaves no pending dial", procs, async () => {
          const hole = await startBlackhole();
          try {
            const closeBefore = await serverMetric(server, dialFailures("frontend_close"));
            const lateBefore = await serverMetric(server, dialFailures("unrecognized_response"));
            const tunnel = createSingleUseTunnel({ udsPath: server.udsPath });
            const from = server.process.mark();
            const dialing = tunnel.dial("tcp", hole.address, { signal: AbortSignal.timeout(500) })
              .catch((e) => e);
            const pending = await server.process.waitForLog("dial pending", { from });
            assert.equal(pending["pending"], 1, "the dial is pending on our server");
            const err = await dialing;
            assert.ok(err instanceof DialError, String(err));
            assert.equal(err.reason, "context");
            const ended = await awaitTables(
              server.process,
              (g) => g.pending === 0 && g.frontends === 0,
              "the pending dial and its frontend stream to be gone",
              { from },
            );
            assert.equal(ended["state"], "pending", "the dial was still pending when it ended");
            const failure = await server.process.waitForLog("dial failure", { from });
            assert.equal(
              failure["reason"],
              "frontend_close",
              "the frontend's close removed the dial",
            );
            assert.equal(await serverMetric(server, SERVER_PENDING), 0);
            assert.equal(await serverMetric(server, SERVER_PROXY_STREAMS), 0);
            assert.equal(
              await serverMetric(server, dialFailures("frontend_close")),
              closeBefore + 1,
            );
            // The upstream agent ignores the cancellation and answers after its 5 s dial timeout;
            // our server must drop that late DIAL_RSP (upstream: "unrecognized_response").
            const lateStarted = performance.now();
            const dropped = await server.process.waitForLog("DIAL_RSP not recognized; dropped", {
              from,
            });
            assert.equal(dropped["dialID"], pending["dialID"], "the cancelled dial's answer");
            assert.equal(
              await serverMetric(server, dialFailures("unrecognized_response")),
              lateBefore + 1,
            );
            console.log(
              `    late DIAL_RSP (agent's 5 s dial timeout) dropped ${
                Math.round(performance.now() - lateStarted)
              } ms after the cancel`,
            );
            assert.equal(await serverMetric(server, SERVER_PENDING), 0);
            assert.equal(await scrape(agent.healthPort, AGENT_OPEN_ENDPOINTS), 0);
            // The agent stream survived the late, unknown response.
            await getSuccess(server.udsPath, backend.address);
          } finally {
            await hole.stop();
          }
        });
      } else {
        console.log("skipping A8 (cancelled pending dial): python3 is not on PATH");
      }

      await step(t, "A9 mixed agents: upstream's and ours on our server", procs, async () => {
        await using ours = await startAgent(server.agentPort, { agentId: "knp-agent-1" });
        await server.agents(2);
        assert.equal(
          await serverMetric(
            server,
            'konnectivity_network_proxy_server_grpc_connections{service_method="Connect"}',
          ),
          2,
        );
        const before = upstreamDials(agent.process);
        await concurrentEcho(server.udsPath, backend.address, 40);
        const viaUpstream = upstreamDials(agent.process) - before;
        console.log(
          `    40 dials: ${viaUpstream} via the upstream agent, ${40 - viaUpstream} via ours`,
        );
        assert.ok(viaUpstream > 0 && viaUpstream < 40, "both agents carried dials");
        await bothSidesIdle();
        void ours;
      });

      await step(
        t,
        "A10 SIGTERM (drain) to the upstream agent; requests still work",
        procs,
        async () => {
          agent.process.kill("SIGTERM");
          await agent.process.waitForText('"Received first signal"');
          // Upstream v0.36.0 sends DRAIN from its receive loop, i.e. only once a packet from the
          // server arrives after the signal was handled: requests trigger it, and must succeed.
          // Each request's packets precede its answer, so the DRAIN they trigger is logged by the
          // time the next check runs or soon after (one more request is harmless).
          const drained = () => server.process.records.some((r) => r.msg === "agent is draining");
          let requests = 0;
          while (!drained() && requests < 100) {
            await getSuccess(server.udsPath, backend.address);
            requests++;
          }
          assert.ok(drained(), `our server never logged the agent's DRAIN (${requests} requests)`);
          console.log(`    DRAIN arrived after ${requests} request(s) following the SIGTERM`);
          // Only a draining agent is left: the server falls back to it.
          await getSuccess(server.udsPath, backend.address);
          await concurrentEcho(server.udsPath, backend.address, 5);
          assert.equal(await server.status("/readyz"), 200);
          const line = server.process.log.split("\n").find((l) => l.includes("agent is draining"));
          console.log(`    our server: ${line}`);
        },
      );

      await step(t, "A11 upstream agent restart: new tunnels work again", procs, async () => {
        await agent.process.stop();
        await server.agents(0);
        assert.equal(await server.status("/readyz"), 500);
        const err = await createSingleUseTunnel({ udsPath: server.udsPath })
          .dial("tcp", backend.address).catch((e) => e);
        assert.ok(err instanceof DialError, String(err));
        assert.equal(err.message, "No agent available");
        const restarted = performance.now();
        agent = await newAgent();
        await server.agents(1);
        assert.equal(await server.status("/readyz"), 200);
        console.log(
          `    agent ready ${Math.round(performance.now() - restarted)} ms after its restart`,
        );
        await getSuccess(server.udsPath, backend.address);
        await concurrentEcho(server.udsPath, backend.address, 20);
      });

      await step(
        t,
        "A12 killing the upstream agent mid-download ends the client's connection promptly",
        procs,
        async () => {
          await killAgentMidDownload(server.udsPath, backend.address, () => agent.process.stop());
          await server.agents(0);
          await awaitTables(
            server.process,
            (g) => g.established === 0 && g.frontends === 0,
            "our server to drop the connection and its stream",
          );
          assert.equal(await serverMetric(server, SERVER_ESTABLISHED), 0);
          assert.equal(await serverMetric(server, SERVER_PROXY_STREAMS), 0);
          assert.equal(await server.status("/readyz"), 500);
          agent = await newAgent();
          await getSuccess(server.udsPath, backend.address);
        },
      );

      await step(t, "A13 no unexpected error lines in the upstream agents' logs", procs, () => {
        const bad = unexpectedKlogErrors(upstreamAgents.map((a) => a.process));
        assert.deepEqual(bad, []);
        return Promise.resolve();
      });
    } finally {
      for (const a of upstreamAgents) await a.process.stop();
      await saveLogs("A", [server.process, ...upstreamAgents.map((a) => a.process)]);
    }
  },
});

// ---------------------------------------------------------------------------------------------
// B. Upstream proxy-server + our proxy-agent

Deno.test({
  name: "B: upstream proxy-server + our proxy-agent",
  ignore: !UPSTREAM_SERVER,
  ...opts,
  async fn(t) {
    await using backend = startHttpBackend();
    const agentPort = foundFreePort();
    const upstreamServers: UpstreamServer[] = [];
    const ourAgents: Logged[] = [];
    const newServer = async (port = agentPort, frontend: "uds" | "tcp" = "uds") => {
      const s = await startUpstreamServer(port, frontend);
      upstreamServers.push(s);
      return s;
    };
    const newAgent = async (port = agentPort) => {
      // B10 drains this agent and B11 still uses it: stay up after DRAIN, as upstream's agent.
      const a = await startAgent(port, {
        agentId: "knp-agent-1",
        extraArgs: ["--knp-drain-timeout=0"],
      });
      ourAgents.push(a.process);
      return a;
    };
    let server = await newServer();
    let agent = await newAgent();
    const procs = () => [server.process, agent.process];
    const upstreamMetric = async (series: string) => await scrape(server.healthPort, series) ?? 0;
    const serverIdle = () =>
      eventually(
        async () =>
          await upstreamMetric(SERVER_ESTABLISHED) === 0 &&
          await upstreamMetric(SERVER_PENDING) === 0,
        "no established or pending connection on the upstream server",
      );
    try {
      await step(t, "B1 upstream server is ready once our agent connects", procs, async () => {
        await eventually(
          async () => await statusOf(`http://127.0.0.1:${server.healthPort}/readyz`) === 200,
          "the upstream server's /readyz to be 200",
        );
        assert.equal(await statusOf(`http://127.0.0.1:${agent.healthPort}/readyz`), 200);
        assert.equal(
          await upstreamMetric(
            'konnectivity_network_proxy_server_ready_backends{proxy_strategy="default"}',
          ),
          1,
        );
      });

      await step(t, "B2 GET /success over the upstream server's UDS", procs, async () => {
        await getSuccess(server.udsPath, backend.address);
        await serverIdle();
      });

      await step(t, "B3 dial to a closed port gives connection refused", procs, async () => {
        await dialClosedPort(server.udsPath);
        assert.equal(await upstreamMetric(dialFailures("error_response")), 1);
      });

      await step(t, "B4 20 concurrent tunnels each echo their own body", procs, async () => {
        await concurrentEcho(server.udsPath, backend.address, 20);
        await serverIdle();
      });

      await step(t, "B5 10 MiB download byte-exact", procs, async () => {
        const ms = await download(server.udsPath, backend.address, 10);
        console.log(`    10 MiB download: ${rate(10, ms)}`);
      });

      await step(t, "B6 10 MiB upload byte-exact", procs, async () => {
        const ms = await upload(server.udsPath, backend.address, 10);
        console.log(`    10 MiB upload: ${rate(10, ms)}`);
        await serverIdle();
      });

      await step(t, "B7 5 dials over one gRPC connection (createTunnel)", procs, async () => {
        await reusableTunnel(server.udsPath, backend.address, 5);
        await serverIdle();
      });

      if (havePython) {
        await step(t, "B8 a cancelled pending dial leaves no pending dial", procs, async () => {
          const hole = await startBlackhole();
          try {
            const dialing = createSingleUseTunnel({ udsPath: server.udsPath })
              .dial("tcp", hole.address, { signal: AbortSignal.timeout(500) }).catch((e) => e);
            await eventually(
              async () => await upstreamMetric(SERVER_PENDING) === 1,
              "the dial to be pending on the upstream server",
            );
            const err = await dialing;
            assert.ok(err instanceof DialError, String(err));
            assert.equal(err.reason, "context");
            await eventually(
              async () => await upstreamMetric(SERVER_PENDING) === 0,
              "the upstream server's pending dial to be gone",
            );
            assert.equal(await upstreamMetric(dialFailures("frontend_close")), 1);
            // Our agent answers late (its dial timeout); the upstream server drops the answer.
            const lateStarted = performance.now();
            await eventually(
              async () => await upstreamMetric(dialFailures("unrecognized_response")) === 1,
              "the upstream server to drop our agent's late DIAL_RSP",
              15_000,
            );
            console.log(
              `    late DIAL_RSP from our agent dropped ${
                Math.round(performance.now() - lateStarted)
              } ms after the cancel`,
            );
            await getSuccess(server.udsPath, backend.address);
          } finally {
            await hole.stop();
          }
        });
      } else {
        console.log("skipping B8 (cancelled pending dial): python3 is not on PATH");
      }

      if (UPSTREAM_AGENT) {
        await step(
          t,
          "B9 mixed agents: ours and upstream's on the upstream server",
          procs,
          async () => {
            await using theirs = await startUpstreamAgent(agentPort, "upstream-agent-1");
            await eventually(
              async () =>
                await upstreamMetric(
                  'konnectivity_network_proxy_server_ready_backends{proxy_strategy="default"}',
                ) === 2,
              "both agents connected",
            );
            const before = upstreamDials(theirs.process);
            await concurrentEcho(server.udsPath, backend.address, 40);
            const viaUpstream = upstreamDials(theirs.process) - before;
            console.log(
              `    40 dials: ${viaUpstream} via the upstream agent, ${40 - viaUpstream} via ours`,
            );
            assert.ok(viaUpstream > 0 && viaUpstream < 40, "both agents carried dials");
            await serverIdle();
          },
        );
      } else {
        console.log("skipping B9 (mixed agents): KNP_UPSTREAM_AGENT is not set");
      }

      await step(
        t,
        "B10 SIGTERM (drain) to our agent; the upstream server sees DRAIN",
        procs,
        async () => {
          agent.process.kill("SIGTERM");
          await within(
            30_000,
            "the upstream server to log our agent's DRAIN",
            server.process.waitForText('"agent is draining" agentID="knp-agent-1"'),
          );
          // Only a draining agent is left: the upstream server falls back to it.
          await getSuccess(server.udsPath, backend.address);
          await concurrentEcho(server.udsPath, backend.address, 5);
          const line = server.process.log.split("\n").find((l) => l.includes("agent is draining"));
          console.log(`    upstream server: ${line}`);
        },
      );

      await step(
        t,
        "B11 killing our agent mid-download ends the client's connection promptly",
        procs,
        async () => {
          await agent.process.stop();
          agent = await newAgent();
          await killAgentMidDownload(server.udsPath, backend.address, () => agent.process.stop());
          await eventually(
            async () =>
              await upstreamMetric(SERVER_ESTABLISHED) === 0 &&
              await statusOf(`http://127.0.0.1:${server.healthPort}/readyz`) === 500,
            "the upstream server to drop the connection and the backend",
          );
          agent = await newAgent();
          await getSuccess(server.udsPath, backend.address);
        },
      );

      await step(
        t,
        "B12 upstream server with a TCP frontend (mTLS): GET through our client",
        procs,
        async () => {
          const tcpAgentPort = foundFreePort();
          await using tcpServer = await newServer(tcpAgentPort, "tcp");
          await using tcpAgent = await newAgent(tcpAgentPort);
          void tcpAgent;
          const pki = (await testPki()).files;
          const tls = {
            ca: await Deno.readTextFile(pki.caCert),
            cert: await Deno.readTextFile(pki.clientCert),
            key: await Deno.readTextFile(pki.clientKey),
          };
          const address = `127.0.0.1:${tcpServer.serverPort}`;
          const conn = await createSingleUseTunnel({ address, tls }).dial("tcp", backend.address);
          const res = await within(15_000, "GET over TCP", httpRequest(conn, "GET", "/success"));
          assert.equal(decoder.decode(res.body), "hello");
          const big = await createSingleUseTunnel({ address, tls }).dial("tcp", backend.address);
          const dl = await within(
            60_000,
            "10 MiB over TCP",
            httpRequest(big, "GET", `/download?chunks=10&size=${MiB}`),
          );
          assert.equal(dl.body.length, 10 * MiB);
          assert.equal(firstMismatch(dl.body), -1);
          // Without a client certificate the upstream frontend refuses the client.
          const noCert = createSingleUseTunnel({ address, tls: { ca: tls.ca } });
          const err = await noCert.dial("tcp", backend.address, { timeoutMs: 10_000 })
            .catch((e) => e);
          assert.ok(err instanceof DialError, String(err));
          console.log(`    without a client cert: ${err.reason}: ${err.message}`);
          noCert.close();
        },
      );

      await step(
        t,
        "B13 upstream server restart on the same agent port: our agent reconnects",
        procs,
        async () => {
          // A fresh agent: the scenario needs one that has not been told to drain.
          await agent.process.stop();
          agent = await newAgent();
          server.process.kill("SIGTERM");
          await within(10_000, "upstream server exit", server.process.status);
          await agent.notReady();
          assert.equal(await statusOf(`http://127.0.0.1:${agent.healthPort}/readyz`), 503);
          const restarted = performance.now();
          server = await newServer();
          await agent.ready(20_000).catch((err) => {
            // A draining agent opens no new server connections, by design (upstream's too).
            if (agent.process.log.includes("draining")) {
              throw new Error(
                "our agent was draining: it got SIGTERM/SIGINT from outside this test",
                { cause: err },
              );
            }
            throw err;
          });
          console.log(
            `    our agent ready again ${
              Math.round(performance.now() - restarted)
            } ms after the server restart`,
          );
          await eventually(
            async () => await statusOf(`http://127.0.0.1:${server.healthPort}/readyz`) === 200,
            "the new upstream server's /readyz to be 200",
          );
          await getSuccess(server.udsPath, backend.address);
          await concurrentEcho(server.udsPath, backend.address, 20);
        },
      );

      await step(t, "B14 no unexpected error lines in the upstream servers' logs", procs, () => {
        const bad = unexpectedKlogErrors(upstreamServers.map((s) => s.process));
        assert.deepEqual(bad, []);
        return Promise.resolve();
      });
    } finally {
      await agent.process.stop();
      for (const s of upstreamServers) await s[Symbol.asyncDispose]();
      await saveLogs("B", [...upstreamServers.map((s) => s.process), ...ourAgents]);
    }
  },
});
