// deno-lint-ignore-file no-console -- reports skipped tests
/**
 * The dial error taxonomy (internal/dial_errors.ts) end to end through real processes: every kind
 * produced for real, seen by an HTTP-CONNECT client (status, `X-Knp-Error-Kind`, a body naming the
 * server and the agent) and by the gRPC client library (`DialError.kind`, `.serverId`, `.agentId`).
 * Each case runs against an http-connect server and a gRPC server side by side.
 */

import assert from "node:assert/strict";
import { createSingleUseTunnel, createTunnel, DialError } from "@knp/client";
import { type DialErrorKind, HTTP_STATUS } from "../core/dial_errors.ts";
import { readSample } from "../server/metrics.ts";
import { connect, endpointOf, havePython, startBlackhole, tunnel } from "./connect_client.ts";
import { startEchoBackend } from "./backends.ts";
import { startAgent as startAgentLib } from "@knp/agent/lib";
import type { LogFields, Logger } from "@knp/core/log";
import { CLOSED_PORT, type ServerProcess, startAgent, startServer, testPki } from "./framework.ts";

/** Server verbosity that logs "forwarding DIAL_REQ" once a dial is pending (debug level). */
const DEBUG = "--v=5";
const decoder = new TextDecoder();
const NS = "konnectivity_network_proxy_server";

type Mode = "http-connect" | "grpc";
const MODES: Mode[] = ["http-connect", "grpc"];

if (!havePython) console.log("skipping the blackhole cases: python3 is not on PATH");

/** A server of one mode with its own server ID. */
async function startSide(mode: Mode, name: string, args: string[] = []): Promise<ServerProcess> {
  return await startServer({
    extraArgs: [
      ...(mode === "http-connect" ? ["--mode=http-connect"] : []),
      `--server-id=${serverIdOf(mode, name)}`,
      ...args,
    ],
  });
}

function serverIdOf(mode: Mode, name: string): string {
  return `${name}-${mode === "grpc" ? "grpc" : "http"}-server`;
}

/** What a failed dial looked like to the client. */
interface Outcome {
  kind: string;
  /** First body line (HTTP) or DialError message (gRPC). */
  reason: string;
  serverId?: string | undefined;
  agentId?: string | undefined;
  /** HTTP status (http-connect only). */
  status?: number;
  /** HTTP status line (http-connect only). */
  statusLine?: string;
  /** Everything the client saw, for assertion messages. */
  raw: string;
}

/** Dials `target` through the server's frontend; the dial must fail. */
async function failedDial(mode: Mode, server: ServerProcess, target: string): Promise<Outcome> {
  if (mode === "http-connect") {
    const { head, body } = await connect(await endpointOf(server), target, { timeoutMs: 30_000 });
    const raw = head.raw + body;
    assert.notEqual(head.status, 200, raw);
    const lines = body.split("\n");
    const field = (name: string) =>
      lines.find((l) => l.startsWith(`${name}: `))?.slice(name.length + 2);
    assert.equal(head.headers["x-knp-error-kind"], field("kind"), `header and body agree: ${raw}`);
    assert.equal(head.headers["connection"], "close", raw);
    return {
      kind: head.headers["x-knp-error-kind"] ?? "",
      reason: lines[0] ?? "",
      serverId: field("server"),
      agentId: field("agent"),
      status: head.status,
      statusLine: head.statusLine,
      raw,
    };
  }
  const err = await createSingleUseTunnel({ udsPath: server.udsPath })
    .dial("tcp", target, { timeoutMs: 30_000 })
    .then((conn) => {
      conn.close();
      return new Error("the dial succeeded");
    }, (e) => e);
  assert.ok(err instanceof DialError, String(err));
  return {
    kind: err.kind,
    reason: err.message,
    serverId: err.serverId,
    agentId: err.agentId,
    raw: `DialError(${err.reason}, ${err.kind}): ${err.message}`,
  };
}

/** Asserts the kind, status, IDs and reason of an outcome. */
function check(
  mode: Mode,
  o: Outcome,
  expected: {
    kind: DialErrorKind;
    status: number;
    serverId: string | undefined;
    agentId: string | undefined;
    reason: RegExp;
  },
): void {
  const what = `${mode} ${expected.kind}: ${o.raw}`;
  assert.equal(o.kind, expected.kind, what);
  if (mode === "http-connect") {
    assert.equal(o.status, expected.status, what);
    assert.equal(o.status, HTTP_STATUS[expected.kind][0], what);
    // kube-apiserver shows only the status line: it carries the reason, kind, server and agent.
    const tag = `kind=${expected.kind} server=${expected.serverId}` +
      (expected.agentId ? ` agent=${expected.agentId}` : "");
    assert.equal(
      o.statusLine,
      `HTTP/1.1 ${o.status} ${HTTP_STATUS[expected.kind][1]}: ${o.reason} [knp: ${tag}]`,
      what,
    );
  }
  assert.equal(o.serverId, expected.serverId, `server ID: ${what}`);
  assert.equal(o.agentId, expected.agentId, `agent ID: ${what}`);
  assert.match(o.reason, expected.reason, what);
}

async function bothModes(fn: (mode: Mode) => Promise<void>): Promise<void> {
  const results = await Promise.allSettled(MODES.map(fn));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) throw failed.reason;
}

async function pendingDials(server: ServerProcess): Promise<number> {
  const res = await server.health("/metrics");
  return readSample(await res.text(), `${NS}_pending_backend_dials`) ?? 0;
}

Deno.test("no-agent (500) then no-route (500) with destHost", async () => {
  await bothModes(async (mode) => {
    await using server = await startSide(mode, "route", ["--proxy-strategies=destHost"]);
    const target = `127.0.0.1:${CLOSED_PORT}`;
    const noAgent = await failedDial(mode, server, target);
    if (mode === "http-connect") {
      assert.ok(
        noAgent.raw.includes("\r\n\r\ncurrently no tunnels available: No agent available\n"),
        noAgent.raw,
      );
    }
    check(mode, noAgent, {
      kind: "no-agent",
      status: 500,
      // Upstream's exact text travels untagged to gRPC clients; the HTTP body names the server.
      serverId: mode === "http-connect" ? serverIdOf(mode, "route") : undefined,
      agentId: undefined,
      reason: /No agent available/,
    });

    const agentId = `elsewhere-${mode}`;
    await using _agent = await startAgent(server.agentPort, {
      agentId,
      extraArgs: ["--agent-identifiers=host=somewhere.example"],
    });
    await server.agents(1);
    assert.equal(await server.status("/readyz"), 200);
    const noRoute = await failedDial(mode, server, target);
    check(mode, noRoute, {
      kind: "no-route",
      status: 500,
      serverId: serverIdOf(mode, "route"),
      agentId: undefined,
      reason: /no agent serves "127\.0\.0\.1:\d+" \(proxy strategies: destHost\)/,
    });
  });
});

Deno.test({
  name: "dial-refused (502), dns-failure (502), dial-timeout (504, --backend-dial-timeout=1s)",
  async fn() {
    const hole = havePython ? await startBlackhole() : undefined;
    try {
      await bothModes(async (mode) => {
        await using server = await startSide(mode, "dial", ["--backend-dial-timeout=1s"]);
        const agentId = `dialer-${mode}`;
        await using _agent = await startAgent(server.agentPort, { agentId });
        const serverId = serverIdOf(mode, "dial");

        check(mode, await failedDial(mode, server, `127.0.0.1:${CLOSED_PORT}`), {
          kind: "dial-refused",
          status: 502,
          serverId,
          agentId,
          reason: /connection refused/,
        });

        // One lookup per mode of a name that cannot exist (RFC 6761 .invalid).
        check(mode, await failedDial(mode, server, "thisdefinitelydoesnotexist.invalid:80"), {
          kind: "dns-failure",
          status: 502,
          serverId,
          agentId,
          reason: /no such host/,
        });

        if (!hole) return;
        const from = server.process.mark();
        const timedOut = await failedDial(mode, server, hole.address);
        check(mode, timedOut, {
          kind: "dial-timeout",
          status: 504,
          serverId,
          agentId,
          reason: /timed out waiting for backend dial/,
        });
        // The server's 1 s bound fired (not the agent's own 5 s dial timeout, "i/o timeout").
        const fired = await server.process.waitForLog("dial timed out waiting for the agent", {
          from,
        });
        assert.equal(fired["agentID"], agentId, `${mode}: ${JSON.stringify(fired)}`);
        assert.equal(fired["address"], hole.address, `${mode}: ${JSON.stringify(fired)}`);
        // The server tears the dial down in the same turn it answers it.
        assert.equal(await pendingDials(server), 0);
      });
    } finally {
      await hole?.stop();
    }
  },
});

Deno.test({
  name: "the agent's own 5 s dial timeout (504 i/o timeout), then tunnel-closed (502) on SIGKILL",
  ignore: !havePython,
  async fn() {
    const hole = await startBlackhole();
    try {
      await bothModes(async (mode) => {
        await using server = await startSide(mode, "agentside", [
          "--backend-dial-timeout=0s",
          DEBUG,
        ]);
        const serverId = serverIdOf(mode, "agentside");
        const agentId = `doomed-${mode}`;
        await using agent = await startAgent(server.agentPort, { agentId });

        const agentFrom = agent.process.mark();
        const timedOut = await failedDial(mode, server, hole.address);
        check(mode, timedOut, {
          kind: "dial-timeout",
          status: 504,
          serverId,
          agentId,
          reason: /i\/o timeout/,
        });
        // The agent's own dial timeout fired, and no server bound did (it is off).
        const failed = await agent.process.waitForLog("dial failed", { from: agentFrom });
        assert.equal(failed["address"], hole.address, `${mode}: ${JSON.stringify(failed)}`);
        assert.match(String(failed["error"]), /i\/o timeout/, `${mode}: ${JSON.stringify(failed)}`);
        assert.doesNotMatch(server.process.log, /dial timed out waiting for the agent/, mode);

        const from = server.process.mark();
        const pending = failedDial(mode, server, hole.address);
        await server.process.waitForLog("forwarding DIAL_REQ", { from });
        assert.equal(await pendingDials(server), 1);
        agent.process.kill("SIGKILL");
        check(mode, await pending, {
          kind: "tunnel-closed",
          status: 502,
          serverId,
          agentId,
          reason: new RegExp(`agent ${agentId} disconnected before the dial completed`),
        });
        assert.equal(await pendingDials(server), 0);
      });
    } finally {
      await hole.stop();
    }
  },
});

Deno.test(
  "agent-draining (503): a stopping agent (AgentHandle.shutdown) refuses new dials",
  async () => {
    await using echo = startEchoBackend();
    const { files } = await testPki();
    const tls = {
      ca: await Deno.readFile(files.caCert),
      cert: await Deno.readFile(files.clientCert),
      key: await Deno.readFile(files.clientKey),
    };
    await bothModes(async (mode) => {
      await using server = await startSide(mode, "drain");
      const serverId = serverIdOf(mode, "drain");
      const agentId = `draining-${mode}`;
      // The binary's signals drain and exit (tests/agent_drain_test.ts); the refusal of a
      // stopping agent is the library's shutdown, run in this process.
      const log = recordingLogger();
      const connected = log.next("connected to proxy server");
      await using agent = startAgentLib({
        proxyServerHost: "127.0.0.1",
        proxyServerPort: server.agentPort,
        agentId,
        tls,
        logger: log,
      });
      await connected;

      // A long-lived connection through the agent.
      let roundTrip: (text: string) => Promise<void>;
      let closeOpen: () => Promise<void>;
      if (mode === "http-connect") {
        const conn = await tunnel(await endpointOf(server), echo.address);
        roundTrip = async (text) => {
          await conn.write(text);
          assert.equal(decoder.decode(await conn.readExactly(text.length)), text);
        };
        closeOpen = () => Promise.resolve(conn.close());
      } else {
        const t = createTunnel({ udsPath: server.udsPath });
        const conn = await t.dial("tcp", echo.address);
        const writer = conn.writable.getWriter();
        const reader = conn.readable.getReader();
        roundTrip = async (text) => {
          await writer.write(new TextEncoder().encode(text));
          let got = "";
          while (got.length < text.length) {
            const { value, done } = await reader.read();
            if (done) throw new Error("echo connection ended");
            got += decoder.decode(value);
          }
          assert.equal(got, text);
        };
        closeOpen = async () => {
          reader.releaseLock();
          writer.releaseLock();
          await t[Symbol.asyncDispose]();
        };
      }
      await roundTrip("before the signals");

      const stopping = agent.shutdown(10_000);

      check(mode, await failedDial(mode, server, echo.address), {
        kind: "agent-draining",
        status: 503,
        serverId,
        agentId,
        reason: /shutting down \(draining\); dial refused/,
      });

      await roundTrip("the open connection still works");
      await closeOpen();
      // Its 10 s grace bounds the wait; it stops once it sees the last connection close.
      await stopping;
      const stopped = log.records.find((r) => r.msg === "shutdown: stopping");
      assert.ok(stopped !== undefined, `${mode}: no "shutdown: stopping"`);
      assert.equal(
        stopped.fields["openConnections"],
        0,
        `${mode}: the grace ran out with a connection still open, not its close`,
      );
    });
  },
);

Deno.test({
  name: "server-overloaded (503) with --knp-max-pending-dials=1",
  ignore: !havePython,
  async fn() {
    const hole = await startBlackhole();
    try {
      await bothModes(async (mode) => {
        await using server = await startSide(mode, "busy", [
          "--knp-max-pending-dials=1",
          "--backend-dial-timeout=2s",
          DEBUG,
        ]);
        const serverId = serverIdOf(mode, "busy");
        const agentId = `busy-${mode}`;
        await using _agent = await startAgent(server.agentPort, { agentId });
        const from = server.process.mark();
        const first = failedDial(mode, server, hole.address);
        await server.process.waitForLog("forwarding DIAL_REQ", { from });
        assert.equal(await pendingDials(server), 1);
        check(mode, await failedDial(mode, server, hole.address), {
          kind: "server-overloaded",
          status: 503,
          serverId,
          agentId: undefined, // refused by the server before any agent is involved
          reason: /server overloaded: 1 dials are already waiting for agents \(limit 1\)/,
        });
        // The first one was still pending, and ends with the server's dial timeout.
        check(mode, await first, {
          kind: "dial-timeout",
          status: 504,
          serverId,
          agentId,
          reason: /timed out waiting for backend dial/,
        });
        // With nothing pending, dials are accepted again.
        check(mode, await failedDial(mode, server, `127.0.0.1:${CLOSED_PORT}`), {
          kind: "dial-refused",
          status: 502,
          serverId,
          agentId,
          reason: /connection refused/,
        });
      });
    } finally {
      await hole.stop();
    }
  },
});

/** A logger that keeps every record (all levels) and resolves `next(msg)` at the first match. */
function recordingLogger(): Logger & {
  records: { msg: string; fields: LogFields }[];
  next(msg: string): Promise<void>;
} {
  const records: { msg: string; fields: LogFields }[] = [];
  const waiters: { msg: string; resolve: () => void }[] = [];
  const add = (msg: string, fields: LogFields = {}) => {
    records.push({ msg, fields });
    for (const w of waiters.filter((w) => w.msg === msg)) w.resolve();
  };
  const logger = {
    records,
    next(msg: string) {
      const { promise, resolve } = Promise.withResolvers<void>();
      waiters.push({ msg, resolve });
      return promise;
    },
    debug: add,
    info: add,
    warn: add,
    error: add,
    with: () => logger,
  };
  return logger;
}
