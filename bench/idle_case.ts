/**
 * The idle case: RSS per idle connection. Direct: a fresh client and a fresh backend process
 * holding N TCP connections between them (the floor: two processes each holding one end). Tunnel,
 * per link: a fresh HTTP-CONNECT server and agent while the client holds N tunneled connections to
 * the backend; (after − before) ÷ N of the server and of the agent. Upstream's server + agent
 * (the upstream link) are measured the same way.
 *
 * @module
 */

import { BackendProcess, ClientProcess, startStack } from "./children.ts";
import type { Target as ConnTarget } from "./conns.ts";
import type { Link } from "./links.ts";
import { progress, sleep } from "./output.ts";
import { type Row, row, type RowInput, type Target } from "./report.ts";
import { MiB, type Settings } from "./settings.ts";
import { round, rssBytes } from "./wire.ts";

const mib = (b: number) => round(b / MiB, 1);

/**
 * RSS of `pids` once it stops moving (≤0.5% between samples 250 ms apart, 6 s at most). Memory
 * settles with no event to wait for: sampling over time is the measurement.
 */
async function settledRss(pids: number[]): Promise<number[]> {
  await sleep(500);
  let last = pids.map(rssBytes);
  for (let i = 0; i < 22; i++) {
    await sleep(250);
    const cur = pids.map(rssBytes);
    const stable = cur.every((v, j) => Math.abs(v - last[j]!) <= 0.005 * last[j]!);
    last = cur;
    if (stable) break;
  }
  return last;
}

/** RSS growth; RSS moves in 4 KiB pages, so growth under one page is reported as one page. */
function grew(before: number, after: number): number {
  return Math.max(4096, after - before);
}

type Opener = (target: ConnTarget, count: number) => Promise<{ seconds: number }>;

function opener(client: ClientProcess, settings: Settings): Opener {
  return async (target, count) => {
    const r = await client.call<{ opened: number; error?: string; seconds: number }>({
      op: "idleOpen",
      target,
      count,
      concurrency: settings.idleConcurrency,
    });
    if (r.error) {
      await client.call({ op: "idleClose" });
      throw new Error(`opened ${r.opened} of ${count} idle connections: ${r.error}`);
    }
    return r;
  };
}

interface DirectFloor {
  /** Client + backend growth per connection right after the open, and after the hold. */
  pair: number;
  settledPair: number;
  details: { client: number[]; backend: number[] };
}

async function directFloor(
  client: ClientProcess,
  backend: BackendProcess,
  open: Opener,
  env: { n: number; holdMs: number },
): Promise<DirectFloor> {
  const { n, holdMs } = env;
  const target = { via: "direct", port: backend.ports.hold } as const;
  await open(target, 50);
  await client.call({ op: "idleClose" });
  const [c0, b0] = await settledRss([client.pid, backend.pid]);
  const opened = await open(target, n);
  const [c1, b1] = await settledRss([client.pid, backend.pid]);
  await sleep(holdMs);
  const [c2, b2] = await settledRss([client.pid, backend.pid]);
  await client.call({ op: "idleClose" });
  progress(
    `idle direct: ${n} conns in ${round(opened.seconds, 2)} s, ` +
      `client ${mib(c0!)}→${mib(c1!)}→${mib(c2!)} MiB, ` +
      `backend ${mib(b0!)}→${mib(b1!)}→${mib(b2!)} MiB (before → open → held)`,
  );
  return {
    pair: (grew(c0!, c1!) + grew(b0!, b1!)) / n,
    settledPair: (grew(c0!, c2!) + grew(b0!, b2!)) / n,
    details: { client: [mib(c0!), mib(c1!), mib(c2!)], backend: [mib(b0!), mib(b1!), mib(b2!)] },
  };
}

/** One sample's three rows: server + agent (with `targets`), server, agent. */
function sampleRows(
  common: Omit<RowInput, "title" | "direct" | "tunnel" | "directIs" | "tunnelIs" | "targets">,
  sample: { label: string; floor: number; server: number; agent: number },
  targets: readonly (Target | undefined)[],
): Row[] {
  const { label, floor, server, agent } = sample;
  const one = { ...common, directIs: "one direct end", direct: floor / 2 };
  return [
    row({
      ...common,
      title: `${label}: server + agent RSS`,
      directIs: "client + backend RSS (direct)",
      tunnelIs: "server + agent RSS",
      direct: floor,
      tunnel: server + agent,
      targets,
    }),
    row({ ...one, title: `${label}: server RSS`, tunnelIs: "server", tunnel: server }),
    row({ ...one, title: `${label}: agent RSS`, tunnelIs: "agent", tunnel: agent }),
  ];
}

async function linkRows(
  link: Link,
  env: { client: ClientProcess; backend: BackendProcess; open: Opener; n: number; holdMs: number },
  floor: DirectFloor,
): Promise<Row[]> {
  const { client, backend, open, n, holdMs } = env;
  await using stack = await startStack(link, "http-connect");
  const via = { via: "http-connect", udsPath: stack.udsPath, port: backend.ports.hold };
  const pids = [stack.pids.server, stack.pids.agent];
  await open(via as ConnTarget, 50);
  await client.call({ op: "idleClose" });
  await sleep(1_000);
  const [s0, a0] = await settledRss(pids);
  const t = await open(via as ConnTarget, n);
  const [s1, a1] = await settledRss(pids);
  await sleep(holdMs);
  const [s2, a2] = await settledRss(pids);
  await client.call({ op: "idleClose" });
  const [s3, a3] = await settledRss(pids);
  const details = {
    conns: n,
    openSeconds: round(t.seconds, 2),
    holdSeconds: holdMs / 1000,
    serverMiB: { before: mib(s0!), holding: mib(s1!), held: mib(s2!), afterClose: mib(s3!) },
    agentMiB: { before: mib(a0!), holding: mib(a1!), held: mib(a2!), afterClose: mib(a3!) },
    directMiB: floor.details,
  };
  const common = {
    case: "idle",
    frontend: "http-connect",
    link: link.name,
    unit: "B/conn",
    better: "lower" as const,
    details,
  };
  const vsUpstream = link.default ? { on: "upstream", op: "<=", value: 1 } as const : undefined;
  const opened = { label: `${n} idle conns`, floor: floor.pair };
  const held = { label: `${n} idle conns, held ${holdMs / 1000} s`, floor: floor.settledPair };
  return [
    ...sampleRows(common, {
      ...opened,
      server: grew(s0!, s1!) / n,
      agent: grew(a0!, a1!) / n,
    }, [vsUpstream]),
    ...sampleRows(common, {
      ...held,
      server: grew(s0!, s2!) / n,
      agent: grew(a0!, a2!) / n,
    }, [link.upstream ? undefined : { on: "tunnel", op: "<=", value: 16 * 1024 }, vsUpstream]),
  ];
}

/** Measures the direct floor, then each link's server and agent; adds three rows per link. */
export async function idleCase(
  links: Link[],
  settings: Settings,
  add: (r: Row) => void,
): Promise<void> {
  const n = settings.idleConns;
  await using backend = await BackendProcess.start();
  await using client = ClientProcess.start();
  const open = opener(client, settings);
  const holdMs = settings.idleHoldMs;
  const floor = await directFloor(client, backend, open, { n, holdMs });
  await sleep(1_000);
  for (const link of links) {
    (await linkRows(link, { client, backend, open, n, holdMs }, floor)).forEach(add);
  }
}
