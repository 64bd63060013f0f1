import { dataPacket } from "@knp/proto";
import { frame, unframe } from "./ws_stream.ts";

const packets = Array.from(
  { length: 8 },
  (_, i) => dataPacket(BigInt(i + 1), new Uint8Array(32 * 1024)),
);
const message = frame(packets);

Deno.bench({
  name: "frame 8 × 32 KiB DATA into one link message",
  group: "ws-frame",
  baseline: true,
}, () => {
  frame(packets);
});

Deno.bench({ name: "unframe + decode 8 × 32 KiB DATA", group: "ws-frame" }, () => {
  let n = 0;
  for (const _ of unframe(message)) n++;
  if (n !== 8) throw new Error("bad unframe");
});
