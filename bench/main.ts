/**
 * knp's macro benchmark suite (`deno task bench`): every case measures the direct path (client
 * straight to the backend, the physical limit) and the tunnel path in the same run, and reports
 * both and their ratio (tunnel ÷ direct) as a table and as one JSON document.
 *
 * Process topology (all on loopback, all separate processes):
 * - this driver: starts everything, reads /proc, never carries benchmark traffic itself;
 * - `bench/backend.ts`: raw TCP source, sink, echo and banner backends;
 * - `bench/client.ts`: the measuring client, driven command by command over stdin/stdout;
 * - `server/main.ts` and `agent/main.ts`: real processes started by `tests/framework.ts`, the
 *   server's frontend on a UDS (`--mode=http-connect` or `--mode=grpc`), the agent over one link
 *   of `bench/links.ts`.
 *
 * With upstream's binaries (`--upstream-server PATH --upstream-agent PATH`, or env
 * `KNP_UPSTREAM_SERVER` / `KNP_UPSTREAM_AGENT`) every case also runs through upstream's server +
 * agent, and each knp row gets upstream's value and knp ÷ upstream (`upstream_stack.ts`). The
 * gRPC frontend is measured with the Go konnectivity-client when `go` builds `bench/goclient`.
 *
 * Usage: `deno task bench [--smoke] [--json FILE] [--cases a,b] [--links a,b]
 * [--frontends http-connect,grpc] [--upstream-server P --upstream-agent P] [--idle-conns N]
 * [--window-ms MS]` (`--help` lists all)
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  BackendProcess,
  ClientProcess,
  CommandTimeout,
  type Stack,
  startStack,
} from "./children.ts";
import type { Target as ConnTarget } from "./conns.ts";
import { idleCase } from "./idle_case.ts";
import { webhookCase } from "./webhook_case.ts";
import { haLoadCase } from "./ha_load_case.ts";
import {
  DEFAULT_LINK,
  detectLinks,
  type Link,
  LINKS,
  UPSTREAM_LINK,
  type UpstreamBinaries,
  upstreamLink,
  upstreamOption,
} from "./links.ts";
import { grpcFrontendClient } from "./go_client.ts";
import { print, progress } from "./output.ts";
import { type CaseContext, runPathCase } from "./path_cases.ts";
import { mergeRounds, mergeUpstream, type Row, table } from "./report.ts";
import {
  type CaseName,
  CASES,
  DEFAULT_CASES,
  type Frontend,
  FRONTENDS,
  FULL,
  HELP,
  LATENCY_CASES,
  list,
  machine,
  type Settings,
  SMOKE,
} from "./settings.ts";
import { openFilesLimit, round } from "./wire.ts";
import { Run } from "./run.ts";

function parseOptions() {
  const { values } = parseArgs({
    options: {
      smoke: { type: "boolean", default: false },
      json: { type: "string" },
      cases: { type: "string" },
      links: { type: "string" },
      frontends: { type: "string" },
      "idle-conns": { type: "string" },
      "window-ms": { type: "string" },
      rounds: { type: "string" },
      "ha-sessions": { type: "string" },
      "ha-mib": { type: "string" },
      "upstream-server": { type: "string" },
      "upstream-agent": { type: "string" },
      "no-upstream": { type: "boolean", default: false },
      "go-client": { type: "boolean", default: false },
      "knp-client": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  const settings: Settings = { ...(values.smoke ? SMOKE : FULL) };
  if (values["idle-conns"]) settings.idleConns = Number(values["idle-conns"]);
  if (values["window-ms"]) settings.isolationWindowMs = Number(values["window-ms"]);
  if (values.rounds) settings.latencyRounds = positiveInteger("--rounds", values.rounds);
  if (values["ha-sessions"]) settings.haLoadSessions = Number(values["ha-sessions"]);
  if (values["ha-mib"]) settings.haLoadBytesEach = Math.round(Number(values["ha-mib"]) * 2 ** 20);
  return {
    values,
    settings,
    cases: new Set<CaseName>(list(values.cases ?? DEFAULT_CASES.join(","), CASES, "case")),
    frontends: list(values.frontends, FRONTENDS, "frontend"),
    linkNames: list(values.links, LINKS.map((l) => l.name), "link"),
    upstream: upstreamOption(values),
  };
}

function positiveInteger(flag: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) {
    throw new Error(`${flag} wants a whole number ≥ 1, got ${value}`);
  }
  return n;
}

/** Only caps the idle count when the open-files limit is lower than it needs; the count wanted. */
function capIdle(settings: Settings): number {
  const fdLimit = openFilesLimit();
  const idleWanted = settings.idleConns;
  settings.idleConns = Math.max(1, Math.min(idleWanted, fdLimit - 256));
  if (settings.idleConns < idleWanted) {
    progress(`idle: open-files limit ${fdLimit} allows ${settings.idleConns} of ${idleWanted}`);
  }
  return idleWanted;
}

interface PathEnv {
  run: Run;
  client: ClientProcess;
  /** The client of the gRPC frontend's rows when not `client` (the Go konnectivity-client). */
  grpcClient: ClientProcess | undefined;
  backend: BackendProcess;
  settings: Settings;
  cases: Exclude<CaseName, "idle">[];
  fastLink: Link | undefined;
}

/**
 * Starts one stack (frontend + link), warms it up and runs `cases` on it; returns the cases left
 * when one timed out (a hung command holds the client until its stack ends: they run on a fresh
 * stack).
 */
async function runStack(
  link: Link,
  frontend: Frontend,
  env: PathEnv,
  cases: PathEnv["cases"],
): Promise<PathEnv["cases"]> {
  const { run, backend, settings } = env;
  const client = frontend === "grpc" && env.grpcClient ? env.grpcClient : env.client;
  const where = { frontend, link: link.name };
  let stack: Stack;
  try {
    stack = await startStack(link, frontend);
  } catch (err) {
    run.errors.push({ case: "stack", ...where, error: String(err) });
    progress(`FAILED to start ${frontend} server + ${link.name} agent: ${err}`);
    return [];
  }
  await using _stack = stack;
  const ports = backend.ports;
  const ctx: CaseContext = {
    client,
    ports,
    pids: { client: client.pid, ...stack.pids, backend: backend.pid },
    where,
    link,
    fastLink: env.fastLink,
    settings,
    direct: (port: number): ConnTarget => ({ via: "direct", port }),
    via: (port: number): ConnTarget => ({ via: frontend, udsPath: stack.udsPath, port }),
    add: run.add,
    health: stack.health,
  };
  progress(`${frontend} frontend over the ${link.name} link: warming up`);
  const steps: [string, () => Promise<void>][] = [
    ["warmup", () => warmUp(ctx)],
    ...cases.map((c): [string, () => Promise<void>] => [c, () => runPathCase(c, ctx)]),
  ];
  for (const [i, [name, body]] of steps.entries()) {
    let timedOut = false;
    await run.attempt({ case: name, ...where }, async () => {
      try {
        await body();
      } catch (err) {
        timedOut = err instanceof CommandTimeout;
        throw err;
      }
    });
    if (timedOut) {
      progress(`${frontend} frontend over the ${link.name} link: timeout; a fresh stack goes on`);
      return i === 0 ? [] : cases.slice(i); // a hung warm-up gives the stack up
    }
  }
  return [];
}

/**
 * Every path case once on each stack, then the latency cases `latencyRounds - 1` more times, each
 * round on fresh stacks in the opposite order to the round before (their rows are merged into
 * medians at the end).
 */
async function runRounds(env: PathEnv, links: Link[], frontends: Frontend[]): Promise<void> {
  const rounds = env.settings.latencyRounds;
  for (let round = 0; round < rounds; round++) {
    const cases = round === 0 ? env.cases : env.cases.filter((c) => LATENCY_CASES.includes(c));
    if (cases.length === 0) break;
    if (round > 0) progress(`latency round ${round + 1} of ${rounds}: ${cases.join(", ")}`);
    for (const link of round % 2 === 0 ? links : [...links].reverse()) {
      for (const frontend of frontends) {
        let left: PathEnv["cases"] = cases;
        while (left.length > 0) left = await runStack(link, frontend, env, left);
      }
    }
  }
}

/** Warms a stack up: a download each way (direct and tunnel) and 100 echoes. */
async function warmUp(ctx: CaseContext): Promise<void> {
  const { client, ports, settings } = ctx;
  for (const target of [ctx.direct(ports.source), ctx.via(ports.source)]) {
    await client.call({
      op: "transfer",
      target,
      direction: "download",
      bytes: settings.warmupBytes,
    });
  }
  await client.call({ op: "echo", target: ctx.via(ports.echo), iterations: 100, warmup: 0 });
}

/** Prints the table, the skipped links and failures, and writes or prints the JSON document. */
async function report(
  run: Run,
  info: Record<string, unknown>,
  smoke: boolean,
  json: string | undefined,
  document: Record<string, unknown>,
  skipped: { link: Link; reason?: string }[],
): Promise<void> {
  print(
    `\nknp bench — ${info.cores} cores (${info.cpu}), deno ${info.deno}, ` +
      `commit ${info.commit}${smoke ? ", SMOKE sizes (numbers mean nothing)" : ""}`,
  );
  print(`${info.note}`);
  print(
    "direct = client straight to the backend; tunnel = client → server frontend (UDS) → agent " +
      "link → agent → backend; ratio = tunnel ÷ direct; upstream = the tunnel through upstream's " +
      "server + agent; knp/up = tunnel ÷ upstream; knp's default link is the one with no " +
      `knp-only flag. gRPC frontend client: ${info.grpcFrontendClient}.\n`,
  );
  print(table(document.results as Row[]));
  for (const s of skipped) print(`\nlink ${s.link.name} skipped: ${s.reason}`);
  for (const e of run.errors) print(`\nFAILED ${e.case} (${e.frontend}, ${e.link}): ${e.error}`);
  const text = JSON.stringify(document, null, 2);
  if (json) await Deno.writeTextFile(json, text + "\n");
  else print("\n" + text);
}

/** The JSON document of a run. */
function reportDocument(r: {
  started: Date;
  smoke: boolean;
  info: Record<string, unknown>;
  settings: Settings;
  idleWanted: number;
  linkStatus: { link: Link; available: boolean; reason?: string }[];
  run: Run;
  upstream: UpstreamBinaries | undefined;
}): Record<string, unknown> {
  return {
    schema: "knp-bench/2",
    started: r.started.toISOString(),
    seconds: round((Date.now() - r.started.getTime()) / 1000, 1),
    smoke: r.smoke,
    machine: r.info,
    settings: r.settings,
    idleConnsRequested: r.idleWanted,
    links: r.linkStatus.map((s) => ({
      name: s.link.name,
      description: s.link.description,
      serverArgs: s.link.serverArgs,
      agentArgs: s.link.agentArgs,
      available: s.available,
      ...(s.reason ? { reason: s.reason } : {}),
    })),
    defaultLink: DEFAULT_LINK,
    upstream: r.upstream ?? null,
    results: mergeUpstream(mergeRounds(r.run.rows), mergeRounds(r.run.upstreamRows)),
    errors: r.run.errors,
  };
}

/** The chosen links, each with whether the binaries accept its flags (reported as progress). */
async function availableLinks(names: string[]) {
  const linkStatus = await detectLinks(LINKS.filter((l) => names.includes(l.name)));
  for (const s of linkStatus) {
    progress(`link ${s.link.name}: ${s.available ? "available" : `skipped (${s.reason})`}`);
  }
  return linkStatus;
}

/** ha-load runs upstream's fleet itself (from the environment). */
const knpOnly = (links: Link[]) => links.filter((l) => !l.upstream);

/** The cases that start processes of their own: idle, webhook and the opt-in ha-load. */
async function runOwnCases(
  run: Run,
  cases: Set<CaseName>,
  links: Link[],
  settings: Settings,
): Promise<void> {
  if (cases.has("idle") && links.length > 0) {
    await run.attempt({ case: "idle", frontend: "http-connect", link: "*" }, async () => {
      await idleCase(links, settings, run.add);
    });
  }
  if (cases.has("webhook") && settings.webhookCalls > 0) {
    await run.attempt({ case: "webhook", frontend: "*", link: "grpc" }, async () => {
      await webhookCase(settings, run.add);
    });
  }
  if (cases.has("ha-load")) {
    await run.attempt({ case: "ha-load", frontend: "http-connect", link: "*" }, async () => {
      await haLoadCase(
        { sessions: settings.haLoadSessions, bytesEach: settings.haLoadBytesEach },
        [...new Set(knpOnly(links).map((l) => l.link))],
        run.add,
      );
    });
  }
}

async function main(): Promise<number> {
  const { values, settings, cases, frontends, linkNames, upstream } = parseOptions();
  if (values.help) {
    print(HELP);
    return 0;
  }
  const started = new Date();
  const info = await machine();
  progress(`${info.cores} cores (${info.cpu}); deno ${info.deno}; commit ${info.commit}`);
  progress(String(info.note));

  const run = new Run();
  const linkStatus = await availableLinks(linkNames);
  const knpLinks = linkStatus.filter((s) => s.available).map((s) => s.link);
  const links = upstream ? [...knpLinks, upstreamLink(upstream)] : knpLinks;
  const goBinary = await grpcFrontendClient(values, frontends, info);
  const idleWanted = capIdle(settings);
  const pathCases = CASES.filter((c): c is Exclude<CaseName, "idle" | "webhook" | "ha-load"> =>
    c !== "idle" && c !== "webhook" && c !== "ha-load" && cases.has(c)
  );
  if (pathCases.length > 0) {
    await using backend = await BackendProcess.start();
    await using client = ClientProcess.start();
    await using grpcClient = goBinary ? ClientProcess.start(goBinary) : undefined;
    for (const c of [client, grpcClient]) if (c) c.timeoutMs = settings.commandTimeoutMs;
    const env = {
      run,
      client,
      grpcClient,
      backend,
      settings,
      cases: pathCases,
      fastLink: links.find((l) => l.fast),
    };
    await runRounds(env, links, frontends);
  }
  await runOwnCases(run, cases, links, settings);
  if (upstream) progress(`upstream rows: ${run.upstreamRows.length}`);

  const skipped = linkStatus.filter((s) => !s.available);
  const document = reportDocument({
    started,
    smoke: values.smoke ?? false,
    info,
    settings,
    idleWanted,
    linkStatus,
    run,
    upstream,
  });

  await report(run, info, values.smoke ?? false, values.json, document, skipped);
  // Upstream's failures are findings about upstream (reported), not failures of the bench.
  return run.errors.every((e) => e.link === UPSTREAM_LINK) ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
