/**
 * Agent links the suite measures: how the agent talks to the server. A link is only the extra
 * flags the server and the agent need to use it; everything else is the same for every link.
 *
 * A link whose flags the binaries do not accept (not listed by `--help`) is skipped and reported
 * as such, so the suite keeps running while a link is being built.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import type { AgentLink } from "../tests/framework.ts";

/**
 * One agent link: the test framework's link (it passes the link's port flags, with the port the
 * server reports) plus any extra flags. With `upstream`, the "link" is upstream's own server +
 * agent pair (gRPC over mTLS), started from those binaries instead of knp's.
 */
export interface Link {
  /** Short name, used by `--links` and in the report. */
  name: string;
  /** The framework's agent link (`startServer({ link })`; agents follow the server's). */
  link: AgentLink;
  /** Flags the link needs in both binaries' `--help` (beyond the extra flags below). */
  requires: string[];
  /** Extra flags of `server/main.ts`. */
  serverArgs: string[];
  /** Extra flags of `agent/main.ts` (after the framework's, so they may override them). */
  agentArgs: string[];
  /** The link the "fast link" targets apply to. */
  fast?: boolean;
  /** knp's default configuration: what an operator gets; the knp ÷ upstream ratios use it. */
  default?: boolean;
  /** Upstream's binaries (this link is upstream's server + agent, not knp's). */
  upstream?: UpstreamBinaries;
  description: string;
}

/** Paths of upstream's `proxy-server` and `proxy-agent`. */
export interface UpstreamBinaries {
  server: string;
  agent: string;
}

/** The name of the default link (the knp ÷ upstream comparison's knp side). */
export const DEFAULT_LINK = "default";

/** Every knp link, in report order. */
export const LINKS: Link[] = [
  {
    name: DEFAULT_LINK,
    link: "grpc",
    requires: [],
    serverArgs: [],
    agentArgs: [],
    default: true,
    description: "knp's default: no knp-only flag (the agent port; knp server and agent " +
      "negotiate the WebSocket link there once --knp-fast-link exists, else gRPC)",
  },
  {
    name: "grpc",
    link: "grpc",
    requires: ["--knp-fast-link"],
    serverArgs: ["--knp-fast-link=false"],
    agentArgs: ["--knp-fast-link=false"],
    description: "upstream's agent link only: gRPC over TLS (--knp-fast-link=false on both)",
  },
  // knp's own link on a dedicated port: the server listens on --knp-websocket-port, the agent
  // connects there instead of gRPC (the framework passes the flag to both).
  {
    name: "websocket",
    link: "websocket",
    requires: ["--knp-websocket-port"],
    serverArgs: [],
    agentArgs: [],
    fast: true,
    description: "knp's agent link on a dedicated port: WebSocket over TLS (--knp-websocket-port)",
  },
];

/** The name of upstream's pseudo-link. */
export const UPSTREAM_LINK = "upstream";

/** Upstream's server + agent as a link of the run (gRPC agent link over mTLS). */
export function upstreamLink(bins: UpstreamBinaries): Link {
  return {
    name: UPSTREAM_LINK,
    link: "grpc",
    requires: [],
    serverArgs: [],
    agentArgs: [],
    upstream: bins,
    description: `upstream's proxy-server (${bins.server}) + proxy-agent (${bins.agent}), ` +
      "gRPC agent link over mTLS",
  };
}

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** Long flag names (`--name`) a binary lists in its `--help`. */
export async function helpFlags(script: string): Promise<Set<string>> {
  const out = await new Deno.Command(Deno.execPath(), {
    // `--help` needs no permission at all.
    args: ["run", "--no-prompt", script, "--help"],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return new Set(text.match(/--[a-z0-9][a-z0-9-]*/g) ?? []);
}

/** Flag names used by `args` (`--name=value` or `--name value`). */
export function flagNames(args: string[]): string[] {
  return args.filter((a) => a.startsWith("--")).map((a) => a.split("=")[0]!);
}

/** Whether each link can run with the binaries as they are, and why not. */
export async function detectLinks(
  links: Link[],
): Promise<{ link: Link; available: boolean; reason?: string }[]> {
  const [server, agent] = await Promise.all([
    helpFlags("server/main.ts"),
    helpFlags("agent/main.ts"),
  ]);
  return links.map((link) => {
    const needs = (args: string[]) => [...link.requires, ...flagNames(args)];
    const missing = [
      ...needs(link.serverArgs).filter((f) => !server.has(f)).map((f) => `server ${f}`),
      ...needs(link.agentArgs).filter((f) => !agent.has(f)).map((f) => `agent ${f}`),
    ];
    return missing.length === 0
      ? { link, available: true }
      : { link, available: false, reason: `flags not accepted yet: ${missing.join(", ")}` };
  });
}

/**
 * Upstream's binaries from the flags, else from the environment (as the mixed-fleet tests and
 * ha-load take them); both or neither. The environment is set from the flags for ha-load.
 */
export function upstreamOption(values: {
  "upstream-server"?: string;
  "upstream-agent"?: string;
  "no-upstream"?: boolean;
}): UpstreamBinaries | undefined {
  if (values["no-upstream"]) {
    Deno.env.delete("KNP_UPSTREAM_SERVER");
    Deno.env.delete("KNP_UPSTREAM_AGENT");
    return undefined;
  }
  const server = values["upstream-server"] ?? Deno.env.get("KNP_UPSTREAM_SERVER");
  const agent = values["upstream-agent"] ?? Deno.env.get("KNP_UPSTREAM_AGENT");
  if (!server && !agent) return undefined;
  if (!server || !agent) {
    throw new Error("give both upstream binaries: --upstream-server and --upstream-agent");
  }
  for (const bin of [server, agent]) Deno.statSync(bin); // fails early on a wrong path
  Deno.env.set("KNP_UPSTREAM_SERVER", server);
  Deno.env.set("KNP_UPSTREAM_AGENT", agent);
  return { server, agent };
}
