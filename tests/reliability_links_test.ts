/**
 * Dead-peer detection on both agent links (issue 10 item 4), with real processes: a SIGSTOPped
 * agent (it keeps its sockets open but answers nothing) is dropped by the server's keepalive, and
 * a SIGSTOPped server is dropped by the agent's. Every process that was stopped is continued
 * before it is torn down.
 *
 * @module
 */

import assert from "node:assert/strict";
import { AGENT_LINKS, startAgent, startServer } from "./framework.ts";
import { connect, endpointOf } from "./connect_client.ts";
import { startEchoBackend } from "./backends.ts";

/** `--keepalive-time` of these tests: a peer is dead at most 1 s + min(1 s, 20 s) after it froze. */
const KEEPALIVE = "--keepalive-time=1s";
/** Failure deadline of the waits below (not a synchronisation point). */
const DEADLINE_MS = 15_000;

/** Runs `body` with `pid` stopped, and continues it whatever happens. */
async function whileStopped<T>(pid: number, body: () => Promise<T>): Promise<T> {
  Deno.kill(pid, "SIGSTOP");
  try {
    return await body();
  } finally {
    Deno.kill(pid, "SIGCONT");
  }
}

for (const link of AGENT_LINKS) {
  Deno.test(`${link} link: the server drops a frozen agent; its pending and new dials fail`, async () => {
    await using server = await startServer({
      link,
      extraArgs: ["--mode=http-connect", KEEPALIVE],
    });
    await using agent = await startAgent(server);
    await server.agents(1);
    await using backend = startEchoBackend();
    const endpoint = await endpointOf(server);
    const target = `127.0.0.1:${backend.port}`;
    // The tunnel works while the agent runs.
    const ok = await connect(endpoint, target);
    assert.equal(ok.head.status, 200);
    ok.conn.close();
    const from = server.process.mark();
    await whileStopped(agent.process.child.pid, async () => {
      // A dial sent to the frozen agent: it can only fail once the agent is found dead.
      const pending = connect(endpoint, target, { timeoutMs: DEADLINE_MS });
      const gone = await server.process.waitForLog("agent disconnected", {
        from,
        timeoutMs: DEADLINE_MS,
      });
      // gRPC: grpc-js destroys the HTTP/2 session, which ends the call without an error.
      if (link === "websocket") assert.match(String(gone.error), /keepalive/);
      const failed = await pending;
      assert.notEqual(failed.head.status, 200, "the pending dial fails");
      // With no agent left a new dial fails at once.
      const refused = await connect(endpoint, target, { timeoutMs: DEADLINE_MS });
      assert.notEqual(refused.head.status, 200);
      assert.match(refused.body + refused.head.statusLine, /agent|backend/i);
    });
  });

  Deno.test(`${link} link: an agent drops a frozen server and says so`, async () => {
    await using server = await startServer({ link });
    await using agent = await startAgent(server, { extraArgs: [KEEPALIVE] });
    await server.agents(1);
    const from = agent.process.mark();
    await whileStopped(server.process.child.pid, async () => {
      await agent.process.waitForLog("lost connection to proxy server", {
        from,
        timeoutMs: DEADLINE_MS,
      });
    });
  });
}
