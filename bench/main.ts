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
 * Usage: `deno run -A bench/main.ts [--smoke] [--json FILE] [--cases a,b] [--links a,b]
 * [--frontends http-connect,grpc] [--idle-conns N] [--window-ms MS]`
 *
 * @module
 */

import { parseArgs } from "node:util";
import { BackendProcess, ClientProcess, type Stack, startStack } from "./children.ts";
import type { Target as ConnTarget } from "./conns.ts";
import { idleCase } from "./idle_case.ts";
import { webhookCase } from "./webhook_case.ts";
import { haLoadCase } from "./ha_load_case.ts";
import { detectLinks, type Link, LINKS } from "./links.ts";
import { print, progress } from "./output.ts";
import { type CaseContext, runPathCase } from "./path_cases.ts";
import { type Row, table } from "./report.ts";
import {
  type CaseName,
  CASES,
  DEFAULT_CASES,
  type Frontend,
  FRONTENDS,
  FULL,
  HELP,
  list,
  machine,
  type Settings,
  SMOKE,
} from "./settings.ts";
import { openFilesLimit, round } from "./wire.ts";

/** A failed case (the run goes on; the exit code says it failed). */
interface Failure {
  case: string;
  frontend: string;
  link: string;
  error: string;
}

/** What a run collects, and how its cases report into it. */
class Run {
  readonly rows: Row[] = [];
  readonly errors: Failure[] = [];

  /** Runs `body`; a failure is recorded and reported, not thrown. */
  async attempt(what: Omit<Failure, "error">, body: () => Promise<void>): Promise<void> {
    try {
      await body();
    } catch (err) {
      const error = err instanceof Error ? err.message : String(err);
      progress(`FAILED ${what.case} (${what.frontend}, ${what.link}): ${error}`);
      this.errors.push({ ...what, error });
    }
  }

  readonly add = (r: Row): void => {
    this.rows.push(r);
    progress(
      `${r.title} [${r.frontend}, ${r.link}]: direct ${round(r.direct, 1)} ${r.unit}, ` +
        `tunnel ${round(r.tunnel, 1)} ${r.unit}, ratio ${r.ratio.toFixed(3)}` +
        (r.met === undefined ? "" : r.met ? " (target met)" : " (target NOT met)"),
    );
  };
}

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
      "ha-sessions": { type: "string" },
      "ha-mib": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  const settings: Settings = { ...(values.smoke ? SMOKE : FULL) };
  if (values["idle-conns"]) settings.idleConns = Number(values["idle-conns"]);
  if (values["window-ms"]) settings.isolationWindowMs = Number(values["window-ms"]);
  if (values["ha-sessions"]) settings.haLoadSessions = Number(values["ha-sessions"]);
  if (values["ha-mib"]) settings.haLoadBytesEach = Math.round(Number(values["ha-mib"]) * 2 ** 20);
  return {
    values,
    settings,
    cases: new Set<CaseName>(list(values.cases ?? DEFAULT_CASES.join(","), CASES, "case")),
    frontends: list(values.frontends, FRONTENDS, "frontend"),
    linkNames: list(values.links, LINKS.map((l) => l.name), "link"),
  };
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
  backend: BackendProcess;
  settings: Settings;
  cases: Exclude<CaseName, "idle">[];
  fastLink: Link | undefined;
}

/** Starts one stack (frontend + link), warms it up and runs the path cases on it. */
async function runStack(link: Link, frontend: Frontend, env: PathEnv): Promise<void> {
  const { run, client, backend, settings } = env;
  const where = { frontend, link: link.name };
  let stack: Stack;
  try {
    stack = await startStack(link, frontend);
  } catch (err) {
    run.errors.push({ case: "stack", ...where, error: String(err) });
    progress(`FAILED to start ${frontend} server + ${link.name} agent: ${err}`);
    return;
  }
  await using _stack = stack;
  const ports = backend.ports;
  const ctx: CaseContext = {
    client,
    ports,
    pids: {
      client: client.pid,
      server: stack.server.process.child.pid,
      agent: stack.agent.process.child.pid,
      backend: backend.pid,
    },
    where,
    link,
    fastLink: env.fastLink,
    settings,
    direct: (port: number): ConnTarget => ({ via: "direct", port }),
    via: (port: number): ConnTarget => ({ via: frontend, udsPath: stack.server.udsPath, port }),
    add: run.add,
    health: { server: stack.server.healthPort, agent: stack.agent.healthPort },
  };
  progress(`${frontend} frontend over the ${link.name} link: warming up`);
  await run.attempt({ case: "warmup", ...where }, async () => {
    for (const target of [ctx.direct(ports.source), ctx.via(ports.source)]) {
      await client.call({
        op: "transfer",
        target,
        direction: "download",
        bytes: settings.warmupBytes,
      });
    }
    await client.call({ op: "echo", target: ctx.via(ports.echo), iterations: 100, warmup: 0 });
  });
  for (const c of env.cases) {
    await run.attempt({ case: c, ...where }, () => runPathCase(c, ctx));
  }
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
      "link → agent → backend; ratio = tunnel ÷ direct.\n",
  );
  print(table(run.rows));
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
}): Record<string, unknown> {
  return {
    schema: "knp-bench/1",
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
    results: r.run.rows,
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
      await webhookCase(settings.webhookCalls, run.add);
    });
  }
  if (cases.has("ha-load")) {
    await run.attempt({ case: "ha-load", frontend: "http-connect", link: "*" }, async () => {
      await haLoadCase(
        { sessions: settings.haLoadSessions, bytesEach: settings.haLoadBytesEach },
        links.map((l) => l.link),
        run.add,
      );
    });
  }
}

async function main(): Promise<number> {
  const { values, settings, cases, frontends, linkNames } = parseOptions();
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
  const links = linkStatus.filter((s) => s.available).map((s) => s.link);
  const idleWanted = capIdle(settings);
  const pathCases = CASES.filter((c): c is Exclude<CaseName, "idle" | "webhook" | "ha-load"> =>
    c !== "idle" && c !== "webhook" && c !== "ha-load" && cases.has(c)
  );
  if (pathCases.length > 0) {
    await using backend = await BackendProcess.start();
    await using client = ClientProcess.start();
    const env = {
      run,
      client,
      backend,
      settings,
      cases: pathCases,
      fastLink: links.find((l) => l.fast),
    };
    for (const link of links) {
      for (const frontend of frontends) await runStack(link, frontend, env);
    }
  }
  await runOwnCases(run, cases, links, settings);

  const skipped = linkStatus.filter((s) => !s.available);
  const document = reportDocument({
    started,
    smoke: values.smoke ?? false,
    info,
    settings,
    idleWanted,
    linkStatus,
    run,
  });

  await report(run, info, values.smoke ?? false, values.json, document, skipped);
  return run.errors.length === 0 ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
