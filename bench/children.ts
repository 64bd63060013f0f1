/**
 * The bench's own child processes: the backends (`backend.ts`) and the measuring client
 * (`client.ts`), both driven over stdin/stdout with JSON lines, plus the server + agent stack of
 * one link, started through the test framework (real `server/main.ts` and `agent/main.ts`) or,
 * for the upstream link, upstream's binaries (`upstream_stack.ts`).
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { type AgentProcess, startAgent, startServer } from "../tests/framework.ts";
import type { Command } from "./client.ts";
import type { Link } from "./links.ts";
import { type Stack, startUpstreamStack } from "./upstream_stack.ts";
import { type BackendPorts, jsonLines, writeJsonLine } from "./wire.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** The backends listen on loopback ports and nothing else. */
const BACKEND_PERMISSIONS = ["--allow-net=127.0.0.1"];
/**
 * The measuring client: loopback and the frontends' UDS (read and write on the socket path), the
 * test certificates, grpc-js's environment variables. No subprocesses, no system information.
 */
export const CLIENT_PERMISSIONS = ["--allow-net", "--allow-read", "--allow-write", "--allow-env"];

/** A `deno run <permissions> <script>` child with JSON lines on stdin/stdout and stderr kept. */
class JsonChild implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: AsyncGenerator<unknown>;
  #stderr = "";

  /**
   * `script` is run by deno with `permissions` (what it needs, never `--allow-all`); `binary`
   * (with no script) is run as it is.
   */
  constructor(script: string, permissions: readonly string[], binary?: string) {
    const child = new Deno.Command(binary ?? Deno.execPath(), {
      args: binary ? [] : ["run", "--no-prompt", ...permissions, script],
      cwd: ROOT,
      env: { NO_COLOR: "1" },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.child = child;
    this.#stdin = child.stdin.getWriter();
    this.#lines = jsonLines(child.stdout);
    (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of child.stderr) {
        this.#stderr = (this.#stderr + decoder.decode(chunk, { stream: true })).slice(-20_000);
      }
    })();
  }

  get pid(): number {
    return this.child.pid;
  }

  /** The last of what the child wrote to stderr. */
  get stderr(): string {
    return this.#stderr;
  }

  protected send(value: unknown): Promise<void> {
    return writeJsonLine(this.#stdin, value);
  }

  protected async receive(): Promise<unknown> {
    const next = await this.#lines.next();
    if (next.done) throw new Error(`child ${this.pid} exited; its stderr:\n${this.#stderr}`);
    return next.value;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#stdin.close().catch(() => {});
    const timer = setTimeout(() => {
      try {
        this.child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 5_000);
    await this.child.status;
    clearTimeout(timer);
    // Drain what is left so the process resources are released.
    await this.#lines.return(undefined).catch(() => {});
  }
}

/** A command the client did not answer in time (its stack is then ended). */
export class CommandTimeout extends Error {
  override name = "CommandTimeout";
}

/** The backends' process. */
export class BackendProcess extends JsonChild {
  ports!: BackendPorts;

  static async start(): Promise<BackendProcess> {
    const p = new BackendProcess("bench/backend.ts", BACKEND_PERMISSIONS);
    p.ports = (await p.receive()) as BackendPorts;
    return p;
  }
}

/** The measuring client's process. */
export class ClientProcess extends JsonChild {
  #id = 0;

  /** What measures: knp's client library (`bench/client.ts`) or the Go konnectivity-client. */
  kind: "knp" | "go" = "knp";

  /** `bench/client.ts`, or the Go client's binary when given (`bench/goclient`). */
  static start(goBinary?: string): ClientProcess {
    if (!goBinary) return new ClientProcess("bench/client.ts", CLIENT_PERMISSIONS);
    const p = new ClientProcess("", [], goBinary);
    p.kind = "go";
    return p;
  }

  /** Longest a command may take (ms) before {@linkcode call} gives up on it. */
  timeoutMs = 5 * 60_000;

  /**
   * Runs one command; throws the client's error, or a timeout after {@linkcode timeoutMs} (the
   * command keeps running in the client: ending the stack it uses makes it answer, and that late
   * answer is skipped by the next call).
   */
  async call<T>(command: Command): Promise<T> {
    const id = ++this.#id;
    await this.send({ id, ...command });
    type Answer = { id: number; ok: boolean; result?: T; error?: string };
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new CommandTimeout(`client ${command.op}: no answer in ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
    });
    let answer: Answer;
    try {
      do answer = (await Promise.race([this.receive(), timeout])) as Answer; while (answer.id < id);
    } finally {
      clearTimeout(timer);
    }
    if (answer.id !== id) throw new Error(`client answered ${answer.id} to command ${id}`);
    if (!answer.ok) throw new Error(`client ${command.op}: ${answer.error}`);
    return answer.result as T;
  }
}

/**
 * The agent's connect-loop and probe intervals at their defaults (upstream's too): the test
 * framework shortens them for its own tests, and the bench compares default configurations.
 */
const AGENT_DEFAULT_INTERVALS = [
  "--sync-interval=1s",
  "--sync-interval-cap=10s",
  "--probe-interval=1s",
];

/**
 * Starts a server (frontend `mode`) and an agent over `link` and waits until they are paired:
 * knp's binaries through the test framework, or upstream's for the upstream link.
 */
export async function startStack(link: Link, mode: "grpc" | "http-connect"): Promise<Stack> {
  if (link.upstream) return await startUpstreamStack(link.upstream, mode);
  const server = await startServer({
    frontend: "uds",
    link: link.link,
    extraArgs: [`--mode=${mode}`, ...link.serverArgs],
  });
  let agent: AgentProcess;
  try {
    // The default link: no flag of the framework's either (the framework turns the negotiated
    // fast link off for its "grpc" link unless told the link is negotiated).
    agent = await startAgent(server, {
      extraArgs: [...AGENT_DEFAULT_INTERVALS, ...link.agentArgs],
      ...(link.default ? { negotiated: true } : {}),
    });
    await server.agents(1);
  } catch (err) {
    await server[Symbol.asyncDispose]();
    throw err;
  }
  return {
    udsPath: server.udsPath,
    pids: { server: server.process.child.pid, agent: agent.process.child.pid },
    health: { server: server.healthPort, agent: agent.healthPort },
    async [Symbol.asyncDispose]() {
      await agent[Symbol.asyncDispose]();
      await server[Symbol.asyncDispose]();
    },
  };
}

export type { Stack };
