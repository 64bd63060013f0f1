/**
 * A child process of the e2e cluster whose output is kept as lines, with promises for "a line
 * matching X appeared" — the suite waits on what processes say, never on a timer.
 *
 * @module
 */

/** A predicate over one output line. */
export type LineMatcher = (line: string) => boolean;

interface Waiter {
  match: LineMatcher;
  resolve: (line: string) => void;
  reject: (err: Error) => void;
}

/** A running child with its stdout and stderr captured line by line. */
export class E2eProcess implements AsyncDisposable {
  readonly name: string;
  readonly child: Deno.ChildProcess;
  readonly lines: string[] = [];
  readonly status: Promise<Deno.CommandStatus>;
  #waiters = new Set<Waiter>();
  #exited = false;

  constructor(name: string, cmd: string, args: string[], env: Record<string, string> = {}) {
    this.name = name;
    this.child = new Deno.Command(cmd, {
      args,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const readers = [this.#read(this.child.stdout), this.#read(this.child.stderr)];
    this.status = Promise.all(readers).then(() => this.child.status).then((status) => {
      this.#exited = true;
      for (const w of this.#waiters) {
        w.reject(new Error(`${name} exited (code ${status.code}) before: ${this.tail()}`));
      }
      this.#waiters.clear();
      return status;
    });
  }

  async #read(stream: ReadableStream<Uint8Array>): Promise<void> {
    let rest = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop() ?? "";
      for (const line of parts) this.#line(line);
    }
    if (rest) this.#line(rest);
  }

  #line(line: string): void {
    this.lines.push(line);
    for (const w of this.#waiters) {
      if (w.match(line)) {
        this.#waiters.delete(w);
        w.resolve(line);
      }
    }
  }

  /** Resolves with the first line (already seen or future) that matches. */
  waitFor(match: LineMatcher | RegExp, seen = true): Promise<string> {
    const m = match instanceof RegExp ? (l: string) => match.test(l) : match;
    if (seen) {
      const found = this.lines.find(m);
      if (found !== undefined) return Promise.resolve(found);
    }
    if (this.#exited) return Promise.reject(new Error(`${this.name} has exited: ${this.tail()}`));
    return new Promise((resolve, reject) => this.#waiters.add({ match: m, resolve, reject }));
  }

  /** The JSON log records (knp's binaries log JSON lines). */
  records(): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    for (const line of this.lines) {
      if (!line.startsWith("{")) continue;
      try {
        out.push(JSON.parse(line));
      } catch { /* not a record */ }
    }
    return out;
  }

  /** Resolves with the first JSON record whose `msg` is `msg`. */
  async record(msg: string, seen = true): Promise<Record<string, unknown>> {
    const line = await this.waitFor((l) => l.includes(`"msg":${JSON.stringify(msg)}`), seen);
    return JSON.parse(line);
  }

  /** The last lines of output, for error messages. */
  tail(n = 15): string {
    return this.lines.slice(-n).join("\n");
  }

  /** Sends a signal (ignored when the process has exited). */
  kill(signal: Deno.Signal = "SIGTERM"): void {
    if (this.#exited) return;
    try {
      this.child.kill(signal);
    } catch { /* already gone */ }
  }

  /** Kills with SIGKILL and waits for the exit. */
  async stop(): Promise<void> {
    this.kill("SIGKILL");
    await this.status;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** See {@linkcode foundFreePort}: etcd, kube-apiserver and upstream's binaries cannot report it. */
export { foundFreePort } from "../framework.ts";
