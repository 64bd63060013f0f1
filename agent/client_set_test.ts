import assert from "node:assert/strict";
import FakeTimers from "@sinonjs/fake-timers";
import { closeRequest, type DecodedPacket } from "@knp/proto";
import { memoryPipe, type PacketStream } from "@knp/transport/packet_stream";
import type { Timers } from "@knp/core/timers";
import {
  ClientSet,
  type ClientSetOptions,
  type ServerAddress,
  type ServerConnection,
} from "./client_set.ts";
import { fakeDialer } from "./_test_socket.ts";
import { PROBE_CONNECT_ID } from "./server_liveness.ts";

/** Lets every queued microtask (and the pipes' pumps) run. */
const settle = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

/** What the fake connector answers for attempt `n` (1-based). */
type Answer =
  | { serverId: string; serverCount?: number }
  | Error
  /** Leaves the attempt pending; the test settles it through `pending`. */
  | "pending";

/** One server connection the connector handed out, seen from the server side. */
interface FakeServer {
  serverId: string;
  end: PacketStream;
  packets: DecodedPacket[];
  ends: (Error | undefined)[];
  /** Whether the ClientSet called `close()` on the connection. */
  closedByAgent: boolean;
  /** Liveness probes received (not in `packets`). */
  probes: number;
  /** Whether the server answers probes (a live server does; a vanished one does not). */
  answers: boolean;
}

function harness(
  script: (n: number, address?: ServerAddress) => Answer,
  options: Partial<ClientSetOptions> = {},
) {
  const clock = FakeTimers.createClock();
  const timers: Timers = {
    now: () => clock.now,
    setTimeout: (cb, ms) => clock.setTimeout(cb, ms) as unknown as number,
    clearTimeout: (h) => clock.clearTimeout(h),
  };
  const attempts: number[] = [];
  const asked: (ServerAddress | undefined)[] = [];
  const servers: FakeServer[] = [];
  const pending: { resolve(a: Answer): void }[] = [];

  function open(answer: Answer): ServerConnection {
    if (answer instanceof Error || answer === "pending") throw new Error("unreachable");
    const [agentEnd, serverEnd] = memoryPipe();
    const server: FakeServer = {
      serverId: answer.serverId,
      end: serverEnd,
      packets: [],
      ends: [],
      closedByAgent: false,
      probes: 0,
      answers: true,
    };
    serverEnd.start({
      onPacket: (p) => {
        if (p.type !== "DATA" || p.data.connectId !== PROBE_CONNECT_ID) {
          return void server.packets.push(p);
        }
        server.probes++;
        // What knp and upstream servers answer for a connectID they do not know.
        if (server.answers) serverEnd.send(closeRequest(PROBE_CONNECT_ID));
      },
      onEnd: (e) => server.ends.push(e),
    });
    servers.push(server);
    return {
      stream: agentEnd,
      serverId: answer.serverId,
      serverCount: answer.serverCount ?? 1,
      close() {
        server.closedByAgent = true;
        agentEnd.close();
      },
    };
  }

  const set = new ClientSet({
    dialer: fakeDialer().dialer,
    timers,
    random: () => 0, // no jitter
    syncIntervalMs: 1_000,
    syncIntervalCapMs: 5_000,
    connect: (address) => {
      attempts.push(clock.now);
      asked.push(address);
      const answer = script(attempts.length, address);
      if (answer instanceof Error) return Promise.reject(answer);
      if (answer !== "pending") return Promise.resolve(open(answer));
      const { promise, resolve, reject } = Promise.withResolvers<ServerConnection>();
      pending.push({
        resolve: (a) => a instanceof Error ? reject(a) : resolve(open(a)),
      });
      return promise;
    },
    ...options,
  });

  return {
    clock,
    set,
    attempts,
    asked,
    servers,
    pending,
    /** Runs the next timer (if any) and lets the async work it starts finish. */
    async next() {
      await clock.nextAsync();
      await settle();
    },
    /** Advances the clock by `ms`, letting async work finish between timers. */
    async advance(ms: number) {
      await clock.tickAsync(ms);
      await settle();
    },
    async stop() {
      set.stop();
      await settle();
    },
  };
}

const refused = () => new Error("connect: connection refused");

Deno.test("ClientSet connects at once when started", async () => {
  const h = harness(() => ({ serverId: "s1" }));
  h.set.start();
  await h.advance(0);
  assert.deepEqual(h.attempts, [0]);
  assert.equal(h.set.size, 1);
  assert.deepEqual(h.set.serverIds, ["s1"]);
  assert.equal(h.set.ready, true);
  await h.stop();
  assert.equal(h.servers[0]!.ends.length, 1, "stop closes the stream");
  assert.equal(h.servers[0]!.closedByAgent, true);
  assert.equal(h.set.size, 0);
});

Deno.test("ClientSet reconnects after a server stream ends", async () => {
  const h = harness((n) => ({ serverId: n === 1 ? "s1" : "s2" }));
  h.set.start();
  await h.advance(0);
  assert.equal(h.set.size, 1);
  await h.advance(10_000);
  assert.equal(h.attempts.length, 1, "one server is enough for servercount 1");

  h.servers[0]!.end.close(new Error("server restarted"));
  await settle();
  assert.equal(h.set.size, 0);
  assert.equal(h.set.ready, false);
  assert.equal(h.servers[0]!.closedByAgent, true);
  await h.advance(0); // random() is 0: the reconnect is scheduled without delay
  assert.equal(h.attempts.length, 2);
  assert.deepEqual(h.set.serverIds, ["s2"]);
  await h.stop();
});

Deno.test("ClientSet backs off by 1.5 up to the cap while the connector fails", async () => {
  const h = harness((n) => n <= 8 ? refused() : { serverId: "s1" });
  h.set.start();
  await h.advance(0);
  for (let i = 0; i < 7; i++) await h.next();
  // Gaps 1000, 1500, 2250, 3375, then capped at 5000.
  assert.deepEqual(h.attempts, [0, 1_000, 2_500, 4_750, 8_125, 13_125, 18_125, 23_125]);
  await h.next(); // the ninth attempt succeeds
  assert.equal(h.attempts.length, 9);
  assert.equal(h.set.size, 1);
  await h.stop();
});

/** A refusal carrying the server's retry hint, as the connectors report it. */
function throttled(retryAfterMs: number, onCause = false): Error {
  const hinted = Object.assign(new Error("RESOURCE_EXHAUSTED: too many agents"), { retryAfterMs });
  return onCause ? new Error("connect failed", { cause: hinted }) : hinted;
}

Deno.test("ClientSet waits at least the server's retry hint, then backs off as usual", async () => {
  const h = harness((n) => n === 1 ? throttled(7_000) : n === 2 ? throttled(200, true) : refused());
  h.set.start();
  await h.advance(0);
  await h.next(); // the hint (7000) is longer than the backoff (1000)
  await h.next(); // the hint on the cause (200) is shorter than the backoff (1500)
  await h.next();
  assert.deepEqual(h.attempts, [0, 7_000, 8_500, 10_750]);
  await h.stop();
});

Deno.test("ClientSet restarts the backoff at the base interval after a success", async () => {
  const h = harness((n) => n === 1 ? { serverId: "s1" } : refused());
  h.set.start();
  await h.advance(0);
  h.servers[0]!.end.close();
  await settle();
  await h.advance(0); // the reconnect after the loss fails
  await h.next();
  await h.next();
  const t0 = h.attempts[1]!;
  assert.deepEqual(h.attempts.slice(1).map((t) => t - t0), [0, 1_000, 2_500]);
  await h.stop();
});

Deno.test("ClientSet closes a connection to an already connected server and does not count it", async () => {
  const ids = ["s1", "s1", "s2"];
  const h = harness((n) => ({ serverId: ids[n - 1] ?? "s9", serverCount: 2 }));
  h.set.start();
  await h.advance(0);
  assert.equal(h.set.size, 1);
  assert.equal(h.set.serverCount, 2);
  await h.advance(1_000);
  assert.equal(h.attempts.length, 2);
  assert.equal(h.set.size, 1, "the duplicate is not counted");
  assert.equal(h.servers[0]!.probes, 1, "the held connection to s1 was probed");
  assert.equal(h.servers[1]!.closedByAgent, true);
  assert.equal(h.servers[1]!.ends.length, 1);
  assert.equal(h.servers[0]!.ends.length, 0, "the first connection to s1 stays: it answered");
  await h.advance(1_000);
  assert.equal(h.attempts[2]! - h.attempts[1]!, 1_000, "a duplicate does not grow the backoff");
  assert.deepEqual(h.set.serverIds.sort(), ["s1", "s2"]);
  await h.stop();
});

Deno.test("ClientSet stops connecting once it holds servercount distinct servers", async () => {
  const h = harness((n) => ({ serverId: `s${n}`, serverCount: 3 }));
  h.set.start();
  await h.advance(0);
  await h.advance(20_000);
  assert.equal(h.set.size, 3);
  assert.equal(h.attempts.length, 3);
  await h.stop();
});

Deno.test("ClientSet keeps connecting past servercount with syncForever", async () => {
  const h = harness((n) => ({ serverId: `s${n}`, serverCount: 1 }), { syncForever: true });
  h.set.start();
  await h.advance(0);
  await h.advance(3_000);
  assert.equal(h.set.size, 4);
  assert.deepEqual(h.attempts, [0, 1_000, 2_000, 3_000]);
  await h.stop();
});

Deno.test("ClientSet drain sends DRAIN on every stream and opens no new connection", async () => {
  const h = harness((n) => ({ serverId: `s${n}`, serverCount: 2 }));
  h.set.start();
  await h.advance(0);
  await h.advance(1_000);
  assert.equal(h.set.size, 2);
  h.set.drain();
  h.set.drain(); // once only
  await settle();
  assert.equal(h.set.draining, true);
  for (const server of h.servers) {
    assert.deepEqual(server.packets.map((p) => p.type), ["DRAIN"]);
  }
  h.servers[0]!.end.close();
  await settle();
  await h.advance(30_000);
  assert.equal(h.attempts.length, 2, "no new connection while draining");
  assert.equal(h.set.size, 1, "the remaining stream keeps serving");
  await h.stop();
});

Deno.test("ClientSet keeps a single sync loop when a stream ends during a connect", async () => {
  const h = harness((n) => n === 2 ? "pending" : { serverId: `s${n}`, serverCount: 2 }, {
    liveness: "off", // counts the sync timer alone
  });
  h.set.start();
  await h.advance(0);
  await h.next(); // attempt 2 starts and stays pending
  assert.equal(h.attempts.length, 2);
  h.servers[0]!.end.close(); // s1 goes away while attempt 2 is in flight
  await settle();
  await h.advance(0);
  h.pending[0]!.resolve({ serverId: "s2", serverCount: 2 });
  await settle();
  await h.advance(0);
  assert.deepEqual(h.set.serverIds.sort(), ["s2", "s3"]);
  assert.equal(h.clock.countTimers(), 1, "exactly one pending sync timer");
  const before = h.attempts.length;
  h.set.stop();
  await h.advance(60_000);
  assert.equal(h.attempts.length, before, "nothing runs after stop");
  assert.equal(h.clock.countTimers(), 0);
});

Deno.test("ClientSet probes a silent server and drops it when the probe goes unanswered", async () => {
  const h = harness((n) => ({ serverId: n === 1 ? "s1" : "s2" }), {
    liveness: { idleMs: 10_000, timeoutMs: 5_000, checkMs: 1_000 },
  });
  h.set.start();
  await h.advance(0);
  await h.advance(9_000);
  assert.equal(h.servers[0]!.probes, 0, "not probed before 10 s of silence");
  await h.advance(1_000);
  assert.equal(h.servers[0]!.probes, 1, "probed after 10 s of silence");
  await h.advance(20_000);
  assert.equal(h.servers[0]!.probes, 3, "an answered probe restarts the 10 s");
  assert.deepEqual(h.set.serverIds, ["s1"]);
  assert.equal(h.servers[0]!.packets.length, 0, "the agent never answers the probe's answer");

  h.servers[0]!.answers = false; // vanished: the connection stays open, nothing answers
  await h.advance(10_000); // the probe goes out
  assert.equal(h.servers[0]!.probes, 4);
  await h.advance(4_000);
  assert.deepEqual(h.set.serverIds, ["s1"], "still within the timeout");
  await h.advance(1_000);
  assert.equal(h.servers[0]!.closedByAgent, true, "dropped 5 s after the unanswered probe");
  await h.advance(1);
  assert.deepEqual(h.set.serverIds, ["s2"], "and the set connects again at once");
  await h.stop();
});

Deno.test("ClientSet: a new connection to a held server ID replaces the held one when it fails a probe", async () => {
  // s1 vanishes without closing; its replacement (same ID) answers a later attempt.
  const ids = ["s1", "s2", "s1"];
  const h = harness((n) => ({ serverId: ids[n - 1] ?? "s2", serverCount: 2 }), {
    syncForever: true,
    liveness: { idleMs: 60_000, timeoutMs: 5_000, checkMs: 1_000 },
  });
  h.set.start();
  await h.advance(0);
  await h.advance(1_000);
  assert.deepEqual(h.set.serverIds.sort(), ["s1", "s2"]);
  h.servers[0]!.answers = false;
  await h.advance(1_000); // attempt 3 reaches the new s1; the held s1 is probed
  assert.equal(h.servers[0]!.probes, 1);
  assert.equal(h.servers[2]!.closedByAgent, false, "the new s1 waits for the probe");
  await h.advance(5_000);
  assert.equal(h.servers[0]!.closedByAgent, true, "the stale s1 is dropped");
  assert.equal(h.servers[2]!.closedByAgent, false, "the new s1 is kept");
  assert.deepEqual(h.set.serverIds.sort(), ["s1", "s2"]);
  assert.equal(h.set.size, 2);
  // Traffic goes to the new connection: its server sees DRAIN when the agent drains.
  h.set.drain();
  await settle();
  assert.deepEqual(h.servers[2]!.packets.map((p) => p.type), ["DRAIN"]);
  await h.stop();
});

Deno.test("ClientSet learns a new servercount from any handshake, a duplicate's too", async () => {
  // Scale-up: servers restarted with --server-count=3 announce it on a duplicate too.
  const ids = ["s1", "s2", "s1", "s3"];
  const counts = [2, 2, 3, 3];
  const h = harness((n) => ({ serverId: ids[n - 1] ?? "s9", serverCount: counts[n - 1] ?? 3 }), {
    syncForever: true,
  });
  h.set.start();
  await h.advance(0);
  await h.advance(1_000);
  assert.equal(h.set.serverCount, 2);
  await h.advance(1_000);
  assert.equal(h.set.size, 2, "the duplicate is closed");
  assert.equal(h.set.serverCount, 3, "but its count is learnt");
  await h.advance(1_000);
  assert.deepEqual(h.set.serverIds.sort(), ["s1", "s2", "s3"]);
  await h.stop();
});

Deno.test("ClientSet scales down and up without restart: holds what the servers announce", async () => {
  // Three servers; s3 goes away (scale-down to 2), later a new s4 appears with count 3 again.
  const answers: Answer[] = [
    { serverId: "s1", serverCount: 3 },
    { serverId: "s2", serverCount: 3 },
    { serverId: "s3", serverCount: 3 },
    refused(), // s3's address is gone
    { serverId: "s1", serverCount: 2 }, // restarted servers announce 2
    { serverId: "s4", serverCount: 3 }, // scaled up again
    { serverId: "s2", serverCount: 3 }, // s2 is back
  ];
  const h = harness((n) => answers[n - 1] ?? { serverId: "s1", serverCount: 3 });
  h.set.start();
  await h.advance(0);
  await h.advance(2_000);
  assert.equal(h.set.size, 3);
  h.servers[2]!.end.close(); // s3 scaled down
  await settle();
  await h.advance(1); // refused
  await h.advance(1_000); // a duplicate of s1 says 2
  assert.equal(h.set.serverCount, 2);
  assert.equal(h.set.size, 2);
  await h.advance(10_000);
  assert.equal(h.attempts.length, 5, "count reached: no more attempts");
  h.servers[1]!.end.close(); // s2 restarts for the scale-up
  await settle();
  await h.advance(1);
  assert.deepEqual(h.set.serverIds.sort(), ["s1", "s4"]);
  assert.equal(h.set.serverCount, 3);
  await h.advance(1_000);
  assert.deepEqual(h.set.serverIds.sort(), ["s1", "s2", "s4"], "three again, no restart");
  await h.stop();
});

Deno.test("ClientSet connects to each resolved address directly, re-resolving every round", async () => {
  const byHost: Record<string, string> = { "10.0.0.1": "s1", "10.0.0.2": "s2", "10.0.0.3": "s3" };
  let hosts = ["10.0.0.1", "10.0.0.2", "10.0.0.9"];
  let resolves = 0;
  const h = harness((_n, address) => {
    const serverId = byHost[address?.host ?? ""];
    return serverId === undefined ? refused() : { serverId, serverCount: 3 };
  }, {
    addresses: () => {
      resolves++;
      return Promise.resolve(hosts.map((host) => ({ host, serverName: "konnectivity" })));
    },
  });
  h.set.start();
  await h.advance(0);
  assert.deepEqual(h.asked.map((a) => a?.host), ["10.0.0.1", "10.0.0.2", "10.0.0.9"]);
  assert.ok(h.asked.every((a) => a?.serverName === "konnectivity"), "TLS verifies the name");
  assert.deepEqual(h.set.serverIds.sort(), ["s1", "s2"]);
  await h.advance(1_000); // one address refused, two held: not a failed round
  assert.deepEqual(h.asked.slice(3).map((a) => a?.host), ["10.0.0.9"], "held ones not redialed");
  hosts = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]; // DNS now lists the third server
  await h.advance(1_000);
  assert.deepEqual(h.set.serverIds.sort(), ["s1", "s2", "s3"]);
  assert.equal(resolves, 3);
  await h.advance(10_000);
  assert.equal(resolves, 3, "count reached: no more lookups");
  await h.stop();
});
