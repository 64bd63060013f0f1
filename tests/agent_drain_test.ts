/**
 * The agent's drain through real processes: a rolling restart of 3 agents (each SIGTERMed, then
 * replaced) under continuous traffic through one server fails no request. Each drained agent
 * keeps serving a connection it held at the signal, the server marks it draining, and it exits 0
 * once that connection has finished (and not before).
 *
 * @module
 */

import assert from "node:assert/strict";
import { createSingleUseTunnel, createTunnel } from "@knp/client";
import { type EchoBackend, readExactly, startEchoBackend } from "./backends.ts";
import {
  AGENT_LINKS,
  type AgentProcess,
  type ServerProcess,
  startAgent,
  startServer,
} from "./framework.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** An open tunnel connection that echoes through the proxy. */
interface Held {
  roundTrip(text: string): Promise<void>;
  close(): Promise<void>;
}

/** Dials `address` through the server and round-trips `text` on the connection. */
async function openHeld(server: ServerProcess, address: string): Promise<Held> {
  const tunnel = createTunnel({ udsPath: server.udsPath });
  const conn = await tunnel.dial("tcp", address);
  const writer = conn.writable.getWriter();
  const reader = conn.readable.getReader();
  const pending = { rest: new Uint8Array() };
  return {
    async roundTrip(text) {
      await writer.write(encoder.encode(text));
      const got = await readExactly(reader, encoder.encode(text).length, pending);
      assert.equal(decoder.decode(got), text);
    },
    async close() {
      reader.releaseLock();
      writer.releaseLock();
      await tunnel[Symbol.asyncDispose]();
    },
  };
}

/** One request: a new tunnel, a dial, an echoed line, the close. */
async function request(server: ServerProcess, address: string, text: string): Promise<void> {
  const tunnel = createSingleUseTunnel({ udsPath: server.udsPath });
  const conn = await tunnel.dial("tcp", address, { timeoutMs: 10_000 });
  try {
    const writer = conn.writable.getWriter();
    const reader = conn.readable.getReader();
    await writer.write(encoder.encode(text));
    const got = await readExactly(reader, encoder.encode(text).length, { rest: new Uint8Array() });
    assert.equal(decoder.decode(got), text);
    reader.releaseLock();
    writer.releaseLock();
  } finally {
    conn.close();
  }
}

/**
 * Requests from `workers` loops until `stop()`; `reaches(n)` resolves at the n-th success, or
 * once every loop ended. A loop ends at its first failure (it would spin on instant ones).
 */
function traffic(server: ServerProcess, echo: EchoBackend, workers: number) {
  let ok = 0;
  let running = true;
  const failures: string[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  const loop = async (w: number) => {
    for (let i = 0; running; i++) {
      try {
        await request(server, echo.address, `worker ${w} request ${i}\n`);
        ok++;
        for (const x of waiters.filter((x) => x.n <= ok)) x.resolve();
      } catch (err) {
        failures.push(`worker ${w} request ${i}: ${err}`);
        return;
      }
    }
  };
  const loops = Array.from({ length: workers }, (_, w) => loop(w));
  const ended = Promise.all(loops);
  return {
    failures,
    get ok() {
      return ok;
    },
    reaches(n: number): Promise<void> {
      const { promise, resolve } = Promise.withResolvers<void>();
      waiters.push({ n, resolve });
      if (ok >= n) resolve();
      return Promise.race([promise, ended.then(() => {})]);
    },
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}

/**
 * Opens connections to `address` until `agent` has dialed one of them (its debug record names
 * the address); returns them all, still open.
 */
async function holdThrough(
  agent: AgentProcess,
  server: ServerProcess,
  address: string,
): Promise<Held[]> {
  const held: Held[] = [];
  const dialedHere = () =>
    agent.process.records.some((r) => r.msg === "dial succeeded" && r["address"] === address);
  for (let i = 0; i < 60 && !dialedHere(); i++) {
    const conn = await openHeld(server, address);
    await conn.roundTrip(`held ${i}\n`); // the agent's DIAL_RSP came before this echo
    held.push(conn);
  }
  assert.ok(dialedHere(), "no held connection landed on the agent to drain");
  return held;
}

/** SIGTERMs `victim` and waits until it said so and the server marked it draining. */
async function sigterm(victim: AgentProcess, server: ServerProcess, id: string): Promise<void> {
  const from = server.process.mark();
  victim.process.kill("SIGTERM");
  await victim.process.waitForLog((r) => r.msg?.startsWith("draining: sent DRAIN") ?? false);
  await server.process.waitForLog(
    (r) => r.msg === "agent is draining" && r["agentID"] === id,
    { from },
  );
}

for (const link of AGENT_LINKS) {
  Deno.test(`agent drain (${link}): rolling restart of 3 agents fails no request`, async () => {
    await using echo = startEchoBackend();
    await using heldEcho = startEchoBackend();
    await using server = await startServer({ link });
    const agents: { id: string; agent: AgentProcess }[] = [];
    const start = async (id: string) => {
      agents.push({ id, agent: await startAgent(server, { agentId: id, extraArgs: ["--v=5"] }) });
    };
    try {
      for (const id of ["a0", "a1", "a2"]) await start(id);
      await server.agents(3);
      const load = traffic(server, echo, 4);
      await load.reaches(20);
      for (let round = 0; round < 3; round++) {
        const { id, agent: victim } = agents[round]!;
        const held = await holdThrough(victim, server, heldEcho.address);
        await sigterm(victim, server, id);
        await start(`b${round}`);
        // Traffic goes on during the drain, and the held connections keep working.
        await load.reaches(load.ok + 20);
        for (const h of held) await h.roundTrip("after SIGTERM\n");
        const said = () => victim.process.records.map((r) => r.msg);
        assert.ok(!said().includes("drained: every connection finished; exiting"), "exited early");
        for (const h of held) await h.close();
        const exited = await victim.process.status;
        assert.equal(exited.code, 0, victim.process.log);
        assert.ok(said().includes("drained: every connection finished; exiting"), "drain end");
      }
      await load.reaches(load.ok + 20);
      await load.stop();
      assert.deepEqual(load.failures, [], `${load.failures.length} of ${load.ok} failed`);
      await server.agents(3);
    } finally {
      for (const { agent } of agents) await agent[Symbol.asyncDispose]();
    }
  });
}
