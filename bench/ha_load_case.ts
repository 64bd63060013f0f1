/**
 * The `ha-load` case (opt-in: `--cases ha-load`): the load of OpenShift HyperShift's report
 * (2,000 concurrent `oc exec`-like sessions of 5 MB each across 3 proxy-servers) on 3 servers and
 * 3 agents. Every agent holds all 3 servers, the way upstream's agents reach them: each server runs
 * with `--server-count=3` and the agents connect through one address, a real haproxy in TCP mode
 * round-robin over the servers' agent ports (`tests/ha/haproxy.ts`), re-dialing until they hold 3
 * server IDs. The sessions are spread over the 3 servers' HTTP-CONNECT frontends (UDS).
 *
 * Each session downloads its bytes from the source backend and the client checks them by hash
 * (`ha_load_client.ts`). Reported: failed sessions (must be 0), total time (open + transfer),
 * and the peak RSS (`VmHWM`) of each server and agent. The same run direct (client straight to
 * the backend) gives the floor; with `KNP_UPSTREAM_SERVER`/`KNP_UPSTREAM_AGENT` the same run
 * against upstream's binaries gives the comparison.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import {
  type AgentLink,
  type AgentProcess,
  foundFreePort,
  startAgent,
  startServer,
} from "../tests/framework.ts";
import type { LogRecord, ServerProcess } from "../tests/framework.ts";
import { E2eProcess } from "../tests/e2e/process.ts";
import { upstreamBinaries } from "../tests/e2e/upstream.ts";
import { testPki } from "../tests/framework.ts";
import { type Haproxy, startHaproxy } from "../tests/ha/haproxy.ts";
import { BackendProcess, CLIENT_PERMISSIONS } from "./children.ts";
import { type HaLoadCommand, type HaLoadResult, peakRss } from "./ha_load_client.ts";
import { progress } from "./output.ts";
import { type Row, row } from "./report.ts";
import { MiB } from "./settings.ts";
import { round } from "./wire.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const FLEET = 3;

/** Size of the run. */
export interface HaLoadSize {
  sessions: number;
  bytesEach: number;
}

/** 3 servers and 3 agents holding all of them, and what the client needs. */
interface Fleet extends AsyncDisposable {
  udsPaths: string[];
  serverPids: number[];
  agentPids: number[];
  /** Lines of the servers' logs that report a full channel or buffer (upstream's error). */
  fullChannelLines(): number;
}

/** The server IDs `records` hold (connected minus lost). */
function held(records: readonly LogRecord[]): number {
  const ids = new Set<string>();
  for (const r of records) {
    if (r.msg === "connected to proxy server") ids.add(String(r["serverID"]));
    if (r.msg === "lost connection to proxy server") ids.delete(String(r["serverID"]));
  }
  return ids.size;
}

/** Stops what was started, last first. */
async function disposeAll(parts: AsyncDisposable[]): Promise<void> {
  for (const p of parts.reverse()) {
    try {
      await p[Symbol.asyncDispose]();
    } catch { /* best effort */ }
  }
}

async function knpFleet(link: AgentLink): Promise<Fleet> {
  const parts: AsyncDisposable[] = [];
  try {
    const servers: ServerProcess[] = [];
    for (let i = 0; i < FLEET; i++) {
      const s = await startServer({
        frontend: "uds",
        link,
        extraArgs: ["--mode=http-connect", `--server-count=${FLEET}`, `--server-id=ha-s${i}`],
      });
      parts.push(s);
      servers.push(s);
    }
    // The load balancer forwards the link's port: gRPC's agent port or the WebSocket port.
    const port = (s: ServerProcess) => link === "websocket" ? s.websocketPort : s.agentPort;
    const lb: Haproxy = await startHaproxy(
      servers.map((s, i) => ({ name: `s${i}`, port: port(s) })),
    );
    parts.push(lb);
    const linkArgs = link === "websocket" ? [`--knp-websocket-port=${lb.ports[0]}`] : [];
    const agents: AgentProcess[] = [];
    for (let i = 0; i < FLEET; i++) {
      const a = await startAgent(lb.ports[0]!, { agentId: `ha-a${i}`, extraArgs: linkArgs });
      parts.push(a);
      agents.push(a);
    }
    await Promise.all(agents.map((a) =>
      a.process.waitForState(
        (records) => held(records) === FLEET ? records.at(-1) : undefined,
        `${FLEET} servers held`,
      )
    ));
    await Promise.all(servers.map((s) => s.agents(FLEET)));
    return {
      udsPaths: servers.map((s) => s.udsPath),
      serverPids: servers.map((s) => s.process.child.pid),
      agentPids: agents.map((a) => a.process.child.pid),
      fullChannelLines: () =>
        servers.reduce((n, s) => n + s.process.log.split("\n").filter(isFull).length, 0),
      [Symbol.asyncDispose]: () => disposeAll(parts),
    };
  } catch (err) {
    await disposeAll(parts);
    throw err;
  }
}

function isFull(line: string): boolean {
  return /channel .*is full|is full/i.test(line);
}

/** Upstream's proxy-server `i` of the fleet (HTTP-CONNECT on a UDS). */
async function upstreamServer(bin: string, i: number, dir: string) {
  const { files } = await testPki();
  const udsPath = `${dir}/s${i}.sock`;
  const agentPort = foundFreePort();
  const proc = new E2eProcess(`upstream proxy-server ${i}`, bin, [
    "--mode=http-connect",
    `--uds-name=${udsPath}`,
    "--server-port=0",
    `--agent-port=${agentPort}`,
    "--agent-bind-address=127.0.0.1",
    `--health-port=${foundFreePort()}`,
    "--health-bind-address=127.0.0.1",
    `--admin-port=${foundFreePort()}`,
    `--cluster-cert=${files.serverCert}`,
    `--cluster-key=${files.serverKey}`,
    `--cluster-ca-cert=${files.caCert}`,
    `--server-id=up-s${i}`,
    `--server-count=${FLEET}`,
  ]);
  await proc.waitFor(/Starting health server/);
  return { proc, udsPath, agentPort };
}

/** Upstream's proxy-agent `i`, through the load balancer on `port`. */
async function upstreamAgent(bin: string, i: number, port: number): Promise<E2eProcess> {
  const { files } = await testPki();
  return new E2eProcess(`upstream proxy-agent ${i}`, bin, [
    "--proxy-server-host=127.0.0.1",
    `--proxy-server-port=${port}`,
    `--ca-cert=${files.caCert}`,
    `--agent-cert=${files.clientCert}`,
    `--agent-key=${files.clientKey}`,
    "--health-server-host=127.0.0.1",
    `--health-server-port=${foundFreePort()}`,
    `--admin-server-port=${foundFreePort()}`,
    `--agent-id=up-a${i}`,
    "--sync-interval=100ms",
    "--sync-interval-cap=1s",
  ]);
}

async function upstreamFleet(bins: { server: string; agent: string }): Promise<Fleet> {
  const dir = await Deno.makeTempDir({ prefix: "knp-ha-load-" });
  const parts: AsyncDisposable[] = [{
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }).catch(() => {}),
  }];
  try {
    const servers: Awaited<ReturnType<typeof upstreamServer>>[] = [];
    for (let i = 0; i < FLEET; i++) {
      const s = await upstreamServer(bins.server, i, dir);
      parts.push(s.proc);
      servers.push(s);
    }
    const lb = await startHaproxy(servers.map((s, i) => ({ name: `s${i}`, port: s.agentPort })));
    parts.push(lb);
    const agents: E2eProcess[] = [];
    for (let i = 0; i < FLEET; i++) {
      agents.push(await upstreamAgent(bins.agent, i, lb.ports[0]!));
      parts.push(agents.at(-1)!);
    }
    // Each server logs one "Agent connected" per agent stream: 3 each when every agent holds all.
    await Promise.all(servers.map((s) => {
      let n = 0;
      return s.proc.waitFor((l) => l.includes('"Agent connected"') && ++n >= FLEET);
    }));
    return {
      udsPaths: servers.map((s) => s.udsPath),
      serverPids: servers.map((s) => s.proc.child.pid),
      agentPids: agents.map((a) => a.child.pid),
      fullChannelLines: () => servers.reduce((n, s) => n + s.proc.lines.filter(isFull).length, 0),
      [Symbol.asyncDispose]: () => disposeAll(parts),
    };
  } catch (err) {
    await disposeAll(parts);
    throw err;
  }
}

/** Runs the client process once; resolves with what it printed. */
async function runClient(cmd: HaLoadCommand): Promise<HaLoadResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    // `cat`: it reads its own peak RSS in /proc/self (see testing/proc_files.ts).
    args: [
      "run",
      "--no-prompt",
      ...CLIENT_PERMISSIONS,
      "--allow-run=cat",
      "bench/ha_load_client.ts",
      JSON.stringify(cmd),
    ],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success || text === "") {
    throw new Error(`ha-load client failed: ${new TextDecoder().decode(out.stderr).slice(-2000)}`);
  }
  return JSON.parse(text) as HaLoadResult;
}

/** One run through a fleet: the client's result and each process's peak RSS in MiB. */
interface FleetRun {
  result: HaLoadResult;
  seconds: number;
  serverPeakMiB: number[];
  agentPeakMiB: number[];
  fullChannelLines: number;
}

async function throughFleet(fleet: Fleet, port: number, size: HaLoadSize): Promise<FleetRun> {
  const result = await runClient({
    udsPaths: fleet.udsPaths,
    port,
    sessions: size.sessions,
    bytes: size.bytesEach,
  });
  const mib = (pid: number) => round(peakRss(pid) / MiB, 1);
  return {
    result,
    seconds: round(result.openSeconds + result.transferSeconds, 2),
    serverPeakMiB: fleet.serverPids.map(mib),
    agentPeakMiB: fleet.agentPids.map(mib),
    fullChannelLines: fleet.fullChannelLines(),
  };
}

function report(label: string, r: FleetRun): void {
  progress(
    `ha-load ${label}: ${r.result.ok} ok, ${r.result.failed} failed, ${r.seconds} s ` +
      `(open ${round(r.result.openSeconds, 2)} s); peak RSS servers ${r.serverPeakMiB.join("/")} ` +
      `MiB, agents ${r.agentPeakMiB.join("/")} MiB, client ${round(r.result.peakRss / MiB, 1)} ` +
      `MiB; "is full" log lines ${r.fullChannelLines}`,
  );
  for (const e of r.result.errors.slice(0, 5)) progress(`  ${e}`);
}

/** The rows of one fleet's run against the direct floor. */
function rows(
  label: string,
  link: string,
  size: HaLoadSize,
  direct: FleetRun,
  r: FleetRun,
): Row[] {
  const what = `${size.sessions} × ${round(size.bytesEach / MiB, 1)} MiB sessions`;
  const common = { case: "ha-load", frontend: label, link: `${link} (haproxy, 3 servers)` };
  const details = { ...r, result: { ...r.result, errors: r.result.errors.slice(0, 5) } };
  const max = (xs: number[]) => Math.max(...xs);
  const backendIs = "client process (direct run)";
  return [
    row({
      ...common,
      title: `${what}: seconds, 3 servers + 3 agents`,
      unit: "s",
      better: "lower",
      direct: direct.seconds,
      tunnel: r.seconds,
      details,
    }),
    row({
      ...common,
      title: `${what}: failed sessions`,
      unit: "n",
      better: "lower",
      direct: 0,
      tunnel: r.result.failed,
      targets: [{ on: "tunnel", op: "<=", value: 0 }],
    }),
    row({
      ...common,
      title: `${what}: peak RSS, largest server`,
      unit: "MiB",
      better: "lower",
      directIs: backendIs,
      tunnelIs: "largest of the 3 servers",
      direct: round(direct.result.peakRss / MiB, 1),
      tunnel: max(r.serverPeakMiB),
    }),
    row({
      ...common,
      title: `${what}: peak RSS, largest agent`,
      unit: "MiB",
      better: "lower",
      directIs: backendIs,
      tunnelIs: "largest of the 3 agents",
      direct: round(direct.result.peakRss / MiB, 1),
      tunnel: max(r.agentPeakMiB),
    }),
  ];
}

/** The direct run: the client straight to the backend (the floor). */
async function directRun(port: number, size: HaLoadSize): Promise<FleetRun> {
  progress(`ha-load: ${size.sessions} sessions × ${size.bytesEach} bytes, direct`);
  const result = await runClient({
    udsPaths: [],
    port,
    sessions: size.sessions,
    bytes: size.bytesEach,
    direct: true,
  });
  const run: FleetRun = {
    result,
    seconds: round(result.openSeconds + result.transferSeconds, 2),
    serverPeakMiB: [],
    agentPeakMiB: [],
    fullChannelLines: 0,
  };
  report("direct", run);
  return run;
}

/**
 * Runs the case: direct, knp's fleet over each of `links`, and upstream's fleet (gRPC) when its
 * binaries are given. Throws (the run records a failure) when a knp session failed.
 */
export async function haLoadCase(
  size: HaLoadSize,
  links: AgentLink[],
  add: (r: Row) => void,
): Promise<void> {
  await using backend = await BackendProcess.start();
  const port = backend.ports.source;
  const direct = await directRun(port, size);
  let failed = 0;
  for (const link of links) {
    progress(`ha-load: knp fleet over the ${link} link (3 servers, 3 agents through haproxy)`);
    const knp = await (async () => {
      await using fleet = await knpFleet(link);
      return await throughFleet(fleet, port, size);
    })();
    report(`knp (${link})`, knp);
    rows("http-connect", link, size, direct, knp).forEach(add);
    failed += knp.result.failed;
  }
  const bins = upstreamBinaries();
  if (bins) {
    progress("ha-load: upstream fleet (3 servers, 3 agents through haproxy)");
    await using fleet = await upstreamFleet(bins);
    const up = await throughFleet(fleet, port, size);
    report("upstream", up);
    rows("http-connect (upstream)", "grpc", size, direct, up).forEach(add);
  } else {
    progress("ha-load: no upstream run (set KNP_UPSTREAM_SERVER and KNP_UPSTREAM_AGENT)");
  }
  if (failed > 0) throw new Error(`${failed} knp sessions failed`);
}
