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
 * server reports) plus any extra flags.
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
  description: string;
}

/** Every link, in report order. */
export const LINKS: Link[] = [
  {
    name: "grpc",
    link: "grpc",
    requires: [],
    serverArgs: [],
    agentArgs: [],
    description: "upstream's agent link: gRPC (HTTP/2, grpc-js) over TLS",
  },
  // ---------------------------------------------------------------- WebSocket link
  // knp's own link: the server listens on --knp-websocket-port, the agent connects there instead
  // of gRPC (the framework passes the flag to both). A link whose flags the binaries do not list
  // in --help is skipped (and reported as skipped).
  {
    name: "websocket",
    link: "websocket",
    requires: ["--knp-websocket-port"],
    serverArgs: [],
    agentArgs: [],
    fast: true,
    description: "knp's agent link: WebSocket over TLS (--knp-websocket-port)",
  },
];

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
