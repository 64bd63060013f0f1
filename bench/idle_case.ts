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
import { type Row, row } from "./report.ts";
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
  pair: number;
  details: { client: number[]; backend: number[] };
}

async function directFloor(
  client: ClientProcess,
  backend: BackendProcess,
  open: Opener,
  n: number,
): Promise<DirectFloor> {
  const target = { via: "direct", port: backend.ports.hold } as const;
  await open(target, 50);
  await client.call({ op: "idleClose" });
  const [c0, b0] = await settledRss([client.pid, backend.pid]);
  const opened = await open(target, n);
  const [c1, b1] = await settledRss([client.pid, backend.pid]);
  await client.call({ op: "idleClose" });
  progress(
    `idle direct: ${n} conns in ${round(opened.seconds, 2)} s, ` +
      `client ${mib(c0!)}→${mib(c1!)} MiB, backend ${mib(b0!)}→${mib(b1!)} MiB`,
  );
  return {
    pair: (grew(c0!, c1!) + grew(b0!, b1!)) / n,
    details: { client: [mib(c0!), mib(c1!)], backend: [mib(b0!), mib(b1!)] },
  };
}

async function linkRows(
  link: Link,
  env: { client: ClientProcess; backend: BackendProcess; open: Opener; n: number },
  floor: DirectFloor,
): Promise<Row[]> {
  const { client, backend, open, n } = env;
  await using stack = await startStack(link, "http-connect");
  const via = { via: "http-connect", udsPath: stack.udsPath, port: backend.ports.hold };
  const pids = [stack.pids.server, stack.pids.agent];
  await open(via as ConnTarget, 50);
  await client.call({ op: "idleClose" });
  await sleep(1_000);
  const [s0, a0] = await settledRss(pids);
  const t = await open(via as ConnTarget, n);
  const [s1, a1] = await settledRss(pids);
  await client.call({ op: "idleClose" });
  const [s2, a2] = await settledRss(pids);
  const details = {
    conns: n,
    openSeconds: round(t.seconds, 2),
    serverMiB: { before: mib(s0!), holding: mib(s1!), afterClose: mib(s2!) },
    agentMiB: { before: mib(a0!), holding: mib(a1!), afterClose: mib(a2!) },
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
  const server = grew(s0!, s1!) / n;
  const agent = grew(a0!, a1!) / n;
  const one = { ...common, directIs: "one direct end", direct: floor.pair / 2 };
  return [
    row({
      ...common,
      title: `${n} idle conns: server + agent RSS`,
      directIs: "client + backend RSS (direct)",
      tunnelIs: "server + agent RSS",
      direct: floor.pair,
      tunnel: server + agent,
      targets: [
        link.upstream ? undefined : { on: "tunnel", op: "<=", value: 16 * 1024 },
        link.default ? { on: "upstream", op: "<=", value: 1 } : undefined,
      ],
    }),
    row({ ...one, title: `${n} idle conns: server RSS`, tunnelIs: "server", tunnel: server }),
    row({ ...one, title: `${n} idle conns: agent RSS`, tunnelIs: "agent", tunnel: agent }),
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
  const floor = await directFloor(client, backend, open, n);
  await sleep(1_000);
  for (const link of links) {
    (await linkRows(link, { client, backend, open, n }, floor)).forEach(add);
  }
}
