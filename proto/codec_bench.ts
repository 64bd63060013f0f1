import { encodePacket } from "./codec.ts";
import { decodePacket } from "./decode_packet.ts";
import { dataPacket, dialRequest } from "./packet.ts";

const data32k = dataPacket(9007199254740993n, new Uint8Array(32 * 1024).fill(0x5a));
const data4k = dataPacket(42n, new Uint8Array(4 * 1024).fill(0x5a));
const dial = dialRequest("10.244.1.17:10250", 6129484611666145821n);

const data32kBytes = encodePacket(data32k);
const data4kBytes = encodePacket(data4k);
const dialBytes = encodePacket(dial);

Deno.bench("encode DATA 32 KiB", { group: "DATA 32 KiB", baseline: true }, () => {
  encodePacket(data32k);
});
Deno.bench("decode DATA 32 KiB", { group: "DATA 32 KiB" }, () => {
  decodePacket(data32kBytes);
});

Deno.bench("encode DATA 4 KiB", { group: "DATA 4 KiB", baseline: true }, () => {
  encodePacket(data4k);
});
Deno.bench("decode DATA 4 KiB", { group: "DATA 4 KiB" }, () => {
  decodePacket(data4kBytes);
});

Deno.bench("encode DIAL_REQ", { group: "DIAL_REQ", baseline: true }, () => {
  encodePacket(dial);
});
Deno.bench("decode DIAL_REQ", { group: "DIAL_REQ" }, () => {
  decodePacket(dialBytes);
});
