import assert from "node:assert/strict";
import { dataPacket, dialRequest } from "@knp/proto";
import { memoryPipe } from "./packet_stream.ts";
import { grpcCodeName, tapPacketStream } from "./packet_tap.ts";

Deno.test("tapPacketStream reports packets both ways and the end, and passes them on", async () => {
  const [a, b] = memoryPipe();
  const seen: string[] = [];
  const tapped = tapPacketStream(a, {
    sent: (type, bytes) => seen.push(`sent ${type} ${bytes}`),
    received: (type, bytes) => seen.push(`received ${type} ${bytes}`),
    ended: (error) => seen.push(`ended ${error?.message ?? "clean"}`),
    written: (ms) => seen.push(`written ${ms >= 0}`),
  });
  const got: string[] = [];
  const ended = Promise.withResolvers<void>();
  tapped.start({ onPacket: (p) => got.push(p.type), onEnd: () => ended.resolve() });
  const atB: string[] = [];
  const packetAtB = Promise.withResolvers<void>();
  b.start({
    onPacket: (p) => {
      atB.push(p.type);
      packetAtB.resolve();
    },
    onEnd: () => {},
  });
  const taken = Promise.withResolvers<void>();
  tapped.send(dataPacket(1n, new Uint8Array(5)), () => taken.resolve());
  await Promise.all([packetAtB.promise, taken.promise]);
  b.send(dialRequest("127.0.0.1:1", 9n));
  b.close();
  await ended.promise;
  assert.deepEqual(atB, ["DATA"]);
  assert.deepEqual(got, ["DIAL_REQ"]);
  assert.deepEqual(seen, ["sent DATA 5", "written true", "received DIAL_REQ 0", "ended clean"]);
  assert.equal(tapped.closed, true);
});

Deno.test("grpcCodeName names a status code on the error or a cause", () => {
  assert.equal(grpcCodeName({ code: 14 }), "Unavailable");
  assert.equal(grpcCodeName(new Error("x", { cause: { code: 1 } })), "Canceled");
  assert.equal(grpcCodeName(new Error("no code")), "Unknown");
  assert.equal(grpcCodeName({ code: 99 }), "Unknown");
});
