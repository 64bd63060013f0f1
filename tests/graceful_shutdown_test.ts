/**
 * `--graceful-shutdown-timeout` through real processes: on the first SIGTERM the server refuses
 * new frontends, keeps its agent links and lets open tunnels finish; it exits 0 when the last one
 * ends, or at the timeout; a second signal exits 1 at once; a timeout of 0 closes at once.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createSingleUseTunnel, type TunnelConn } from "@knp/client";
import { type ServerProcess, startAgent, startServer } from "./framework.ts";
import { readExactly, startEchoBackend } from "./backends.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A tunnel to the echo backend with its reader and writer. */
interface Echo {
  conn: TunnelConn;
  /** Writes `text` and resolves with what the backend echoes. */
  roundTrip(text: string): Promise<string>;
  close(): Promise<void>;
}

async function openEcho(server: ServerProcess, address: string): Promise<Echo> {
  const conn = await createSingleUseTunnel({ udsPath: server.udsPath }).dial("tcp", address);
  const writer = conn.writable.getWriter();
  const reader = conn.readable.getReader();
  const pending = { rest: new Uint8Array() };
  return {
    conn,
    async roundTrip(text) {
      await writer.write(encoder.encode(text));
      return decoder.decode(await readExactly(reader, text.length, pending));
    },
    async close() {
      await writer.close().catch(() => {});
      reader.releaseLock();
      conn.close();
      await conn.closed.catch(() => {});
    },
  };
}

/** A server with `--graceful-shutdown-timeout`, an agent, an echo backend and one open tunnel. */
async function setup(timeout: string) {
  await using stack = new AsyncDisposableStack();
  const backend = stack.use(startEchoBackend());
  const server = stack.use(
    await startServer({ extraArgs: [`--graceful-shutdown-timeout=${timeout}`] }),
  );
  stack.use(await startAgent(server));
  const echo = await openEcho(server, backend.address);
  assert.equal(await echo.roundTrip("before"), "before");
  const resources = stack.move();
  return { backend, server, echo, [Symbol.asyncDispose]: () => resources.disposeAsync() };
}

/** Sends SIGTERM and resolves once the server logged that it stopped accepting frontends. */
async function terminate(server: ServerProcess): Promise<void> {
  const from = server.process.mark();
  server.process.kill("SIGTERM");
  await server.process.waitForLog("shutting down", { from });
}

Deno.test("graceful shutdown: an open tunnel keeps working, a new dial is refused, exit 0 when it ends", async () => {
  await using s = await setup("60s");
  await terminate(s.server);
  // New frontends are refused while the open tunnel still carries data both ways.
  await assert.rejects(
    createSingleUseTunnel({ udsPath: s.server.udsPath }).dial("tcp", s.backend.address),
  );
  assert.equal(await s.echo.roundTrip("after SIGTERM"), "after SIGTERM");
  assert.equal(await s.server.status("/healthz"), 200, "health answers while draining");
  await s.echo.close();
  // The last connection ended: the server exits on its own, well before the 60 s timeout.
  await s.server.process.waitForLog("graceful shutdown complete");
  assert.equal((await s.server.process.status).code, 0);
  assert.ok(!s.server.process.log.includes("timed out"), s.server.process.log);
});

Deno.test("graceful shutdown: a hung tunnel is cut at the timeout and the server exits 0", async () => {
  await using s = await setup("1s");
  await terminate(s.server);
  assert.equal(await s.echo.roundTrip("still open"), "still open");
  await s.server.process.waitForLog((r) =>
    r.msg?.startsWith("graceful shutdown timed out") ?? false
  );
  assert.equal((await s.server.process.status).code, 0);
  assert.ok(!s.server.process.log.includes("graceful shutdown complete"));
  await s.echo.conn.closed.catch(() => {}); // the tunnel ends with the server
});

Deno.test("graceful shutdown: a second signal exits 1 at once", async () => {
  await using s = await setup("60s");
  await terminate(s.server);
  s.server.process.kill("SIGTERM");
  assert.equal((await s.server.process.status).code, 1);
  await s.echo.conn.closed.catch(() => {});
});

Deno.test("graceful shutdown: with timeout 0 open tunnels are closed at once", async () => {
  await using s = await setup("0s");
  s.server.process.kill("SIGTERM");
  assert.equal((await s.server.process.status).code, 0);
  await s.echo.conn.closed.catch(() => {});
  assert.ok(!s.server.process.log.includes("graceful shutdown complete"));
});
