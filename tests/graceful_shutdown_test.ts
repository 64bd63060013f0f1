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
import { connect, endpointOf, tunnel } from "./connect_client.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The frontends under test: gRPC on the UDS, HTTP-CONNECT on the UDS and on TCP with mTLS. */
const FRONTENDS = ["grpc", "http-connect-uds", "http-connect-tcp"] as const;
type Frontend = (typeof FRONTENDS)[number];

/** A tunnel to the echo backend. */
interface Echo {
  /** Writes `text` and resolves with what the backend echoes. */
  roundTrip(text: string): Promise<string>;
  /** Resolves once the server ended the tunnel. */
  ended(): Promise<void>;
  close(): Promise<void>;
}

/** A tunnel through the gRPC frontend (the client library). */
async function grpcEcho(server: ServerProcess, address: string): Promise<Echo> {
  const conn: TunnelConn = await createSingleUseTunnel({ udsPath: server.udsPath })
    .dial("tcp", address);
  const writer = conn.writable.getWriter();
  const reader = conn.readable.getReader();
  const pending = { rest: new Uint8Array() };
  return {
    async roundTrip(text) {
      await writer.write(encoder.encode(text));
      return decoder.decode(await readExactly(reader, text.length, pending));
    },
    ended: () => conn.closed.catch(() => {}),
    async close() {
      await writer.close().catch(() => {});
      reader.releaseLock();
      conn.close();
      await conn.closed.catch(() => {});
    },
  };
}

/** A tunnel through the HTTP-CONNECT frontend (a raw CONNECT client). */
async function connectEcho(server: ServerProcess, address: string): Promise<Echo> {
  const conn = await tunnel(await endpointOf(server), address);
  return {
    async roundTrip(text) {
      await conn.write(text);
      return decoder.decode(await conn.readExactly(text.length));
    },
    ended: async () => {
      await conn.readToEnd().catch(() => {});
      conn.close();
    },
    close: () => Promise.resolve(conn.close()),
  };
}

function openEcho(frontend: Frontend, server: ServerProcess, address: string): Promise<Echo> {
  return frontend === "grpc" ? grpcEcho(server, address) : connectEcho(server, address);
}

/** Asserts that a new client of the frontend is refused. */
async function assertRefused(frontend: Frontend, server: ServerProcess, address: string) {
  if (frontend === "grpc") {
    await assert.rejects(createSingleUseTunnel({ udsPath: server.udsPath }).dial("tcp", address));
  } else {
    // The listening socket is closed: the connect itself fails (no 503 from a live listener).
    await assert.rejects(connect(await endpointOf(server), address));
  }
}

/** A server with `--graceful-shutdown-timeout`, an agent, an echo backend and one open tunnel. */
async function setup(frontend: Frontend, timeout: string) {
  await using stack = new AsyncDisposableStack();
  const backend = stack.use(startEchoBackend());
  const server = stack.use(
    await startServer({
      frontend: frontend === "http-connect-tcp" ? "tcp" : "uds",
      extraArgs: [
        `--graceful-shutdown-timeout=${timeout}`,
        ...(frontend === "grpc" ? [] : ["--mode=http-connect"]),
      ],
    }),
  );
  stack.use(await startAgent(server));
  const echo = await openEcho(frontend, server, backend.address);
  assert.equal(await echo.roundTrip("before"), "before");
  const resources = stack.move();
  return {
    backend,
    server,
    echo,
    [Symbol.asyncDispose]: async () => {
      await resources.disposeAsync();
      await echo.close();
    },
  };
}

/** Sends SIGTERM and resolves once the server logged that it stopped accepting frontends. */
async function terminate(server: ServerProcess): Promise<void> {
  const from = server.process.mark();
  server.process.kill("SIGTERM");
  await server.process.waitForLog("shutting down", { from });
}

for (const frontend of FRONTENDS) {
  Deno.test(`graceful shutdown (${frontend}): an open tunnel keeps working, a new dial is refused, exit 0 when it ends`, async () => {
    await using s = await setup(frontend, "60s");
    await terminate(s.server);
    // New frontends are refused while the open tunnel still carries data both ways.
    await assertRefused(frontend, s.server, s.backend.address);
    assert.equal(await s.echo.roundTrip("after SIGTERM"), "after SIGTERM");
    assert.equal(await s.server.status("/healthz"), 200, "health answers while draining");
    await s.echo.close();
    // The last connection ended: the server exits on its own, well before the 60 s timeout.
    await s.server.process.waitForLog("graceful shutdown complete");
    assert.equal((await s.server.process.status).code, 0);
    assert.ok(!s.server.process.log.includes("timed out"), s.server.process.log);
  });

  Deno.test(`graceful shutdown (${frontend}): a hung tunnel is cut at the timeout and the server exits 0`, async () => {
    await using s = await setup(frontend, "1s");
    await terminate(s.server);
    assert.equal(await s.echo.roundTrip("still open"), "still open");
    await s.server.process.waitForLog((r) =>
      r.msg?.startsWith("graceful shutdown timed out") ?? false
    );
    assert.equal((await s.server.process.status).code, 0);
    assert.ok(!s.server.process.log.includes("graceful shutdown complete"));
    await s.echo.ended(); // the tunnel ends with the server
  });

  Deno.test(`graceful shutdown (${frontend}): a second signal exits 1 at once`, async () => {
    await using s = await setup(frontend, "60s");
    await terminate(s.server);
    s.server.process.kill("SIGTERM");
    assert.equal((await s.server.process.status).code, 1);
    await s.echo.ended();
  });

  Deno.test(`graceful shutdown (${frontend}): with timeout 0 open tunnels are closed at once`, async () => {
    await using s = await setup(frontend, "0s");
    s.server.process.kill("SIGTERM");
    assert.equal((await s.server.process.status).code, 0);
    await s.echo.ended();
    assert.ok(!s.server.process.log.includes("graceful shutdown complete"));
  });
}
