/**
 * The bench's own child processes: the backends (`backend.ts`) and the measuring client
 * (`client.ts`), both driven over stdin/stdout with JSON lines, plus the server + agent stack of
 * one link, started through the test framework (real `server/main.ts` and `agent/main.ts`).
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import {
  type AgentProcess,
  type ServerProcess,
  startAgent,
  startServer,
} from "../tests/framework.ts";
import type { Command } from "./client.ts";
import type { Link } from "./links.ts";
import { type BackendPorts, jsonLines, writeJsonLine } from "./wire.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** A `deno run -A <script>` child with JSON lines on stdin/stdout and stderr kept. */
class JsonChild implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: AsyncGenerator<unknown>;
  #stderr = "";

  constructor(script: string) {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script],
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

/** The backends' process. */
export class BackendProcess extends JsonChild {
  ports!: BackendPorts;

  static async start(): Promise<BackendProcess> {
    const p = new BackendProcess("bench/backend.ts");
    p.ports = (await p.receive()) as BackendPorts;
    return p;
  }
}

/** The measuring client's process. */
export class ClientProcess extends JsonChild {
  #id = 0;

  static start(): ClientProcess {
    return new ClientProcess("bench/client.ts");
  }

  /** Runs one command; throws the client's error. */
  async call<T>(command: Command): Promise<T> {
    const id = ++this.#id;
    await this.send({ id, ...command });
    const answer = (await this.receive()) as {
      id: number;
      ok: boolean;
      result?: T;
      error?: string;
    };
    if (answer.id !== id) throw new Error(`client answered ${answer.id} to command ${id}`);
    if (!answer.ok) throw new Error(`client ${command.op}: ${answer.error}`);
    return answer.result as T;
  }
}

/** A server and an agent connected over one link, the server's frontend on a UDS. */
export interface Stack extends AsyncDisposable {
  server: ServerProcess;
  agent: AgentProcess;
}

/** Starts a server (frontend `mode`) and an agent over `link`, and waits until they are paired. */
export async function startStack(link: Link, mode: "grpc" | "http-connect"): Promise<Stack> {
  const server = await startServer({
    frontend: "uds",
    link: link.link,
    extraArgs: [`--mode=${mode}`, ...link.serverArgs],
  });
  let agent: AgentProcess;
  try {
    agent = await startAgent(server, { extraArgs: link.agentArgs });
    await server.agents(1);
  } catch (err) {
    await server[Symbol.asyncDispose]();
    throw err;
  }
  return {
    server,
    agent,
    async [Symbol.asyncDispose]() {
      await agent[Symbol.asyncDispose]();
      await server[Symbol.asyncDispose]();
    },
  };
}
