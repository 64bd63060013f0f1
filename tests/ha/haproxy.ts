/**
 * A real haproxy (the Debian package) in TCP mode in front of proxy-servers, for the
 * high-availability tests: round robin over named server slots, TCP health checks every 200 ms,
 * long client/server timeouts (so haproxy never closes an idle agent connection by itself), and
 * its runtime API on a UNIX socket to take a slot out (`disable`, what Kubernetes does with the
 * endpoint of a lost pod) or put it back (`enable`).
 *
 * haproxy runs in the foreground (`-db`) and reports slot changes on stderr ("Server b/s3 is
 * DOWN", "... is UP"), which {@linkcode Haproxy.waitFor} awaits: no polling.
 *
 * @module
 */

import { foundFreePort } from "../framework.ts";

/** Whether an `haproxy` binary is on PATH. */
export async function haveHaproxy(): Promise<boolean> {
  try {
    const { success } = await new Deno.Command("haproxy", { args: ["-v"], stdout: "null" })
      .output();
    return success;
  } catch {
    return false;
  }
}

/** One backend slot: a name and the loopback port it forwards to. */
export interface Slot {
  name: string;
  port: number;
  /** Start in maintenance (a spare slot for a replacement). */
  disabled?: boolean;
}

/** A running haproxy. */
export interface Haproxy extends AsyncDisposable {
  /** Ports of the frontends, in the order of the slot lists given. */
  ports: number[];
  /** Everything haproxy wrote to stderr. */
  readonly log: string;
  /** Sends one runtime API command (e.g. `disable server b0/s3`); resolves with the answer. */
  command(line: string): Promise<string>;
  /** Resolves once stderr contains `text` after `from` (a {@linkcode Haproxy.mark}). */
  waitFor(text: string, from?: number, timeoutMs?: number): Promise<void>;
  /** The current length of the log, for `waitFor(text, from)`. */
  mark(): number;
}

function config(socket: string, frontends: { port: number; slots: Slot[] }[]): string {
  const lines = [
    "global",
    `  stats socket ${socket} mode 600 level admin`,
    "defaults",
    "  mode tcp",
    "  timeout connect 2s",
    "  timeout client 1h",
    "  timeout server 1h",
    "  retries 2",
    "  option redispatch",
  ];
  frontends.forEach(({ port, slots }, i) => {
    lines.push(`frontend f${i}`, `  bind 127.0.0.1:${port}`, `  default_backend b${i}`);
    lines.push(`backend b${i}`, "  balance roundrobin");
    lines.push("  default-server check inter 200ms fall 1 rise 1");
    for (const slot of slots) {
      lines.push(`  server ${slot.name} 127.0.0.1:${slot.port}${slot.disabled ? " disabled" : ""}`);
    }
  });
  return lines.join("\n") + "\n";
}

/**
 * Starts haproxy with one frontend (and backend `b<i>`) per slot list, each on a free port.
 * Agents retry until it listens, so the start is not awaited.
 */
export async function startHaproxy(...backends: Slot[][]): Promise<Haproxy> {
  const dir = await Deno.makeTempDir({ prefix: "knp-haproxy-" });
  const socket = `${dir}/admin.sock`;
  const frontends = backends.map((slots) => ({ port: foundFreePort(), slots }));
  await Deno.writeTextFile(`${dir}/haproxy.cfg`, config(socket, frontends));
  const child = new Deno.Command("haproxy", {
    args: ["-db", "-f", `${dir}/haproxy.cfg`],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let log = "";
  const waiters = new Set<{ text: string; from: number; resolve: () => void }>();
  const read = async (stream: ReadableStream<Uint8Array>) => {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      log += text;
      for (const w of [...waiters]) {
        if (log.indexOf(w.text, w.from) >= 0) (waiters.delete(w), w.resolve());
      }
    }
  };
  const reading = Promise.all([read(child.stdout), read(child.stderr)]);
  return {
    ports: frontends.map((f) => f.port),
    get log() {
      return log;
    },
    mark: () => log.length,
    async command(line) {
      const conn = await Deno.connect({ transport: "unix", path: socket });
      await conn.write(new TextEncoder().encode(line + "\n"));
      const answer = await new Response(conn.readable).text();
      return answer.trim();
    },
    waitFor(text, from = 0, timeoutMs = 30_000) {
      if (log.indexOf(text, from) >= 0) return Promise.resolve();
      const { promise, resolve, reject } = Promise.withResolvers<void>();
      const waiter = { text, from, resolve };
      waiters.add(waiter);
      const timer = setTimeout(() => {
        waiters.delete(waiter);
        reject(new Error(`haproxy: no "${text}" within ${timeoutMs} ms\n${log}`));
      }, timeoutMs);
      return promise.finally(() => clearTimeout(timer));
    },
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await child.status;
      await reading;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
