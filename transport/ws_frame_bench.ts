/**
 * Building a link message's WebSocket frame: the batch of packets encoded straight into a masked
 * frame (one copy, pooled buffer given back as the socket does after writing) against the former
 * path (encode the message, then copy it into a freshly allocated frame).
 *
 * @module
 */

import { dataPacket, encodedLength } from "@knp/proto";
import { encodeClientFrame, encodeFrameWith, OP_BINARY, releaseFrame } from "./ws_frame.ts";
import { frame, framedSize, frameInto } from "./ws_stream.ts";

const packets = Array.from(
  { length: 8 },
  (_, i) => dataPacket(BigInt(i + 1), new Uint8Array(32 * 1024 - 64)),
);

Deno.bench({
  name: "message then masked frame (two copies, fresh buffers)",
  group: "ws-frame-build",
  baseline: true,
}, () => {
  encodeClientFrame(OP_BINARY, frame(packets));
});

Deno.bench({
  name: "packets encoded into the masked frame (one copy, pooled buffer)",
  group: "ws-frame-build",
}, () => {
  const lengths = packets.map(encodedLength);
  const out = encodeFrameWith(
    OP_BINARY,
    framedSize(lengths),
    true,
    (buf, at) => frameInto(packets, lengths, buf, at),
  );
  releaseFrame(out);
});
