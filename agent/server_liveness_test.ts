import assert from "node:assert/strict";
import FakeTimers from "@sinonjs/fake-timers";
import { closeRequest, dataPacket } from "@knp/proto";
import { memoryPipe } from "@knp/transport/packet_stream";
import type { Timers } from "@knp/core/timers";
import { isProbeAnswer, LivenessStream, PROBE_CONNECT_ID } from "./server_liveness.ts";

function setup() {
  const clock = FakeTimers.createClock();
  const timers: Timers = {
    now: () => clock.now,
    setTimeout: (cb, ms) => clock.setTimeout(cb, ms) as unknown as number,
    clearTimeout: (h) => clock.clearTimeout(h),
  };
  const [agentEnd, serverEnd] = memoryPipe();
  const probes: number[] = [];
  const received: string[] = [];
  const dead: string[] = [];
  let answer = true;
  serverEnd.start({
    onPacket: (p) => {
      if (p.type !== "DATA" || p.data.connectId !== PROBE_CONNECT_ID) return;
      probes.push(clock.now);
      if (answer) serverEnd.send(closeRequest(PROBE_CONNECT_ID));
    },
    onEnd: () => {},
  });
  const stream = new LivenessStream(
    agentEnd,
    { idleMs: 2_000, timeoutMs: 1_000, checkMs: 500 },
    (e) => dead.push(e.message),
    timers,
  );
  const ends: (Error | undefined)[] = [];
  stream.start({ onPacket: (p) => received.push(p.type), onEnd: (e) => ends.push(e) });
  const settle = () => new Promise<void>((r) => setTimeout(r, 0));
  return {
    clock,
    stream,
    serverEnd,
    probes,
    received,
    dead,
    ends,
    silence: () => (answer = false),
    advance: async (ms: number) => {
      await clock.tickAsync(ms);
      await settle();
    },
  };
}

Deno.test("isProbeAnswer() recognises only the probe's connectID", () => {
  assert.equal(isProbeAnswer(closeRequest(PROBE_CONNECT_ID) as never), true);
  assert.equal(isProbeAnswer(closeRequest(1n) as never), false);
  assert.equal(isProbeAnswer(dataPacket(PROBE_CONNECT_ID, new Uint8Array()) as never), false);
});

Deno.test("LivenessStream: any received packet postpones the probe; answers are not delivered", async () => {
  const t = setup();
  await t.advance(1_500);
  t.serverEnd.send(dataPacket(7n, new Uint8Array([1])));
  await t.advance(1_500);
  assert.deepEqual(t.probes, [], "traffic 1.5 s ago: no probe yet");
  await t.advance(1_000);
  assert.equal(t.probes.length, 1);
  await t.advance(500);
  assert.deepEqual(t.received, ["DATA"], "the probe's answer is consumed");
  t.stream.close();
});

Deno.test("LivenessStream: an unanswered probe ends the stream with TIMEOUT", async () => {
  const t = setup();
  t.silence();
  await t.advance(2_000);
  assert.equal(t.probes.length, 1);
  await t.advance(500);
  assert.equal(t.ends.length, 0);
  await t.advance(500);
  assert.equal(t.dead.length, 1);
  assert.match(t.dead[0]!, /answered no liveness probe within 1000 ms/);
  assert.equal(t.ends.length, 1);
  assert.equal(t.stream.closed, true);
});

Deno.test("LivenessStream: while the agent paused delivery, silence is not death", async () => {
  const t = setup();
  t.silence();
  t.stream.pause();
  await t.advance(10_000);
  assert.deepEqual(t.probes, [], "no probe while paused");
  assert.equal(t.ends.length, 0);
  t.stream.resume();
  await t.advance(2_000);
  assert.equal(t.probes.length, 1, "probed once resumed and silent");
  await t.advance(1_000);
  assert.equal(t.ends.length, 1);
});

Deno.test("LivenessStream.probe(): true when the server answers, false when silent or ended", async () => {
  const t = setup();
  const answered = t.stream.probe(1_000);
  await t.advance(0);
  assert.equal(await answered, true);
  t.silence();
  const silent = t.stream.probe(1_000);
  await t.advance(1_000);
  assert.equal(await silent, false);
  const ended = t.stream.probe(1_000);
  t.stream.close();
  assert.equal(await ended, false);
  assert.equal(await t.stream.probe(1_000), false);
});
