import assert from "node:assert/strict";
import { knpWindow } from "./packet.ts";
import { PacketDecodeError } from "./errors.ts";
import { encodedLength, encodePacket } from "./codec.ts";
import { decodePacket } from "./decode_packet.ts";
import {
  closeDial,
  closeRequest,
  closeResponse,
  dataPacket,
  type DecodedPacket,
  dialRequest,
  dialResponse,
  drain,
  type Packet,
} from "./packet.ts";

const utf8 = new TextEncoder();

/** Parses hex with optional spaces, e.g. `"08 06 42 00"`. */
function hex(text: string): Uint8Array {
  const clean = text.replaceAll(" ", "");
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

function assertDecodeError(bytes: Uint8Array, message: RegExp | string, offset?: number): void {
  let caught: unknown;
  try {
    decodePacket(bytes);
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof PacketDecodeError, `expected PacketDecodeError for ${toHex(bytes)}`);
  assert.equal(caught.code, "PACKET_DECODE");
  if (typeof message === "string") assert.equal(caught.message, message);
  else assert.match(caught.message, message);
  if (offset !== undefined) assert.equal(caught.offset, offset, caught.message);
}

// The example encodings documented for the upstream Go implementation.
const GOLDEN: [string, Packet, string][] = [
  [
    "DIAL_REQ",
    dialRequest("127.0.0.1:80", 111n, "tcp"),
    "12 15 0a 03 74 63 70 12 0c 31 32 37 2e 30 2e 30 2e 31 3a 38 30 18 6f",
  ],
  ["DIAL_RSP", dialResponse(111n, 1n), "08 01 1a 04 10 01 18 6f"],
  ["DATA", dataPacket(1n, utf8.encode("hi")), "08 04 22 06 08 01 1a 02 68 69"],
  ["CLOSE_REQ", closeRequest(1n), "08 02 2a 02 08 01"],
  ["CLOSE_RSP", closeResponse(1n), "08 03 32 02 10 01"],
  ["DIAL_CLS", closeDial(111n), "08 05 3a 02 08 6f"],
  ["DRAIN", drain(), "08 06 42 00"],
  // Empty payloads are still emitted.
  ["CLOSE_RSP{}", closeResponse(0n), "08 03 32 00"],
  ["DATA with empty data", dataPacket(5n, new Uint8Array(0)), "08 04 22 02 08 05"],
  ["DATA{}", dataPacket(0n, new Uint8Array(0)), "08 04 22 00"],
  ["DIAL_REQ{}", dialRequest("", 0n, ""), "12 00"],
  ["DIAL_RSP with error", dialResponse(7n, 0n, "x"), "08 01 1a 05 0a 01 78 18 07"],
];

for (const [name, packet, bytes] of GOLDEN) {
  Deno.test(`encodePacket() writes the golden bytes of ${name}`, () => {
    assert.equal(toHex(encodePacket(packet)), bytes);
    assert.equal(encodedLength(packet), hex(bytes).length);
  });
  Deno.test(`decodePacket() reads the golden bytes of ${name}`, () => {
    assert.deepStrictEqual(decodePacket(hex(bytes)), packet);
  });
}

Deno.test("encodePacket() writes int64 values as plain varints", () => {
  const cases: [bigint, string][] = [
    [1n, "01"],
    [127n, "7f"],
    [128n, "80 01"],
    [2n ** 53n - 1n, "ff ff ff ff ff ff ff 0f"],
    [2n ** 53n + 1n, "81 80 80 80 80 80 80 10"],
    [2n ** 56n, "80 80 80 80 80 80 80 80 01"],
    [2n ** 63n - 1n, "ff ff ff ff ff ff ff ff 7f"],
    [-1n, "ff ff ff ff ff ff ff ff ff 01"],
    [-(2n ** 63n), "80 80 80 80 80 80 80 80 80 01"],
  ];
  for (const [value, varint] of cases) {
    const body = `08 ${varint}`;
    const payloadLength = hex(body).length.toString(16).padStart(2, "0");
    assert.equal(toHex(encodePacket(closeDial(value))), `08 05 3a ${payloadLength} ${body}`);
  }
});

Deno.test("decodePacket() round-trips int64 edge cases exactly", () => {
  const values = [
    0n,
    1n,
    -1n,
    2n ** 53n,
    2n ** 53n + 1n,
    2n ** 63n - 1n,
    -(2n ** 63n),
    -(2n ** 53n),
  ];
  for (const v of values) {
    for (const p of [dialRequest("a:1", v), dialResponse(v, v), closeDial(v), closeRequest(v)]) {
      assert.deepStrictEqual(decodePacket(encodePacket(p)), p);
    }
    const data = dataPacket(v, new Uint8Array([1]));
    assert.deepStrictEqual(decodePacket(encodePacket(data)), data);
  }
});

Deno.test("encodePacket() rejects values outside the int64 range and wrong field types", () => {
  assert.throws(() => encodePacket(closeDial(2n ** 63n)), RangeError);
  assert.throws(() => encodePacket(closeRequest(-(2n ** 63n) - 1n)), RangeError);
  assert.throws(() => encodePacket(closeDial(1 as unknown as bigint)), TypeError);
  assert.throws(() => encodePacket(dialRequest(undefined as unknown as string, 1n)), TypeError);
  assert.throws(() => encodePacket(dataPacket(1n, [1] as unknown as Uint8Array)), TypeError);
  assert.throws(() => encodePacket({ type: "DATA" } as unknown as Packet), TypeError);
  assert.throws(
    () => encodePacket({ type: "UNKNOWN", typeNumber: 7 } as unknown as Packet),
    TypeError,
  );
});

Deno.test("encodePacket() writes UTF-8 and decodePacket() keeps non-ASCII text and a BOM", () => {
  const text = "\uFEFFüñï©ødé 中文 😀 \u0000 end";
  const p = dialResponse(3n, 0n, text);
  const bytes = encodePacket(p);
  assert.equal(bytes.length, encodedLength(p));
  assert.ok(toHex(bytes).includes(toHex(utf8.encode(text))));
  assert.deepStrictEqual(decodePacket(bytes), p);
});

Deno.test("encodePacket() writes a lone surrogate as U+FFFD", () => {
  const p = closeResponse(1n, "a\uD800b");
  const bytes = encodePacket(p);
  assert.equal(bytes.length, encodedLength(p));
  assert.deepStrictEqual(decodePacket(bytes), closeResponse(1n, "a\uFFFDb"));
});

Deno.test("decodePacket() replaces invalid UTF-8 instead of failing", () => {
  assert.deepStrictEqual(
    decodePacket(hex("08 03 32 03 0a 01 ff")),
    closeResponse(0n, "\uFFFD"),
  );
});

Deno.test("decodePacket() returns DATA bytes as a view of its input", () => {
  const input = encodePacket(dataPacket(9n, utf8.encode("hello")));
  const p = decodePacket(input);
  assert.ok(p.type === "DATA");
  assert.equal(p.data.data.buffer, input.buffer);
  assert.equal(p.data.data.byteOffset, input.length - 5);
  input[input.length - 1] = 0x21;
  assert.equal(new TextDecoder().decode(p.data.data), "hell!");
});

Deno.test("encodePacket() copies DATA bytes that are a view into a larger buffer", () => {
  const big = new Uint8Array(100).map((_, i) => i);
  const p = dataPacket(2n, big.subarray(10, 20));
  assert.deepStrictEqual(decodePacket(encodePacket(p)), dataPacket(2n, big.slice(10, 20)));
});

Deno.test("encodePacket() handles DATA whose length needs a multi-byte varint", () => {
  for (const size of [127, 128, 16383, 16384, 32 * 1024, 1 << 21]) {
    const data = new Uint8Array(size).fill(0xab);
    const p = dataPacket(123456789n, data);
    const bytes = encodePacket(p);
    assert.equal(bytes.length, encodedLength(p));
    assert.deepStrictEqual(decodePacket(bytes), p);
  }
});

// Unknown fields of every wire type: field 9 varint, 10 fixed64, 11 length-delimited,
// 12 fixed32, and field 1000 varint (a two-byte tag).
const UNKNOWN = "48 96 01  51 01 02 03 04 05 06 07 08  5a 02 aa bb  65 01 02 03 04  c0 3e 05";

Deno.test("decodePacket() skips unknown fields at the top level", () => {
  assert.deepStrictEqual(
    decodePacket(hex(`${UNKNOWN} 08 04 ${UNKNOWN} 22 06 08 01 1a 02 68 69 ${UNKNOWN}`)),
    dataPacket(1n, utf8.encode("hi")),
  );
});

Deno.test("decodePacket() skips unknown fields inside payloads", () => {
  // Data: fields 4 (varint), 5 (fixed64), 6 (bytes), 7 (fixed32) are unknown.
  const inner = "20 07  29 01 02 03 04 05 06 07 08  32 01 ff  3d 01 02 03 04";
  const payload = hex(`${inner} 08 01 ${inner} 1a 02 68 69 ${inner}`);
  const bytes = concat(hex("08 04 22"), Uint8Array.of(payload.length), payload);
  assert.deepStrictEqual(decodePacket(bytes), dataPacket(1n, utf8.encode("hi")));
  // Drain: anything inside is unknown.
  assert.deepStrictEqual(decodePacket(hex(`08 06 42 05 08 01 12 01 00`)), drain());
  // DialRequest with unknown fields 4 and 14 (15 is knp's traceparent, tested below).
  assert.deepStrictEqual(
    decodePacket(hex("12 0c 20 01 72 01 00 0a 03 74 63 70 18 02")),
    dialRequest("", 2n, "tcp"),
  );
});

const TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

Deno.test("DIAL_REQ carries knp's traceparent as field 15 after upstream's fields", () => {
  const packet: Packet = {
    type: "DIAL_REQ",
    dialRequest: { protocol: "tcp", address: "a:1", random: 1n, traceparent: TRACEPARENT },
  };
  // Upstream's bytes (12 0c 0a 03 "tcp" 12 03 "a:1" 18 01 with a longer body), then 7a 37 <55>.
  const golden = concat(
    hex("12 45 0a 03 74 63 70 12 03 61 3a 31 18 01 7a 37"),
    utf8.encode(TRACEPARENT),
  );
  assert.equal(toHex(encodePacket(packet)), toHex(golden));
  assert.equal(encodedLength(packet), golden.length);
  assert.deepStrictEqual(decodePacket(golden), packet);
  // Without a traceparent the bytes are upstream's, and the decoded request has no such member.
  const plain = encodePacket(dialRequest("a:1", 1n));
  assert.equal(toHex(plain), "12 0c 0a 03 74 63 70 12 03 61 3a 31 18 01");
  assert.deepStrictEqual(decodePacket(plain), dialRequest("a:1", 1n));
  assert.equal(
    "traceparent" in (decodePacket(plain) as { dialRequest: object }).dialRequest,
    false,
  );
  const empty: Packet = {
    type: "DIAL_REQ",
    dialRequest: { protocol: "tcp", address: "a:1", random: 1n, traceparent: "" },
  };
  assert.deepStrictEqual(encodePacket(empty), plain);
});

Deno.test("decodePacket() skips field 15 of a DIAL_REQ sent with another wire type", () => {
  assert.deepStrictEqual(
    decodePacket(hex("12 09 0a 03 74 63 70 78 05 18 02")),
    dialRequest("", 2n, "tcp"),
  );
});

Deno.test("field 15 of other payloads stays unknown", () => {
  // CloseRequest { connectID: 1, 15: "x" }: skipped, as before.
  assert.deepStrictEqual(decodePacket(hex("08 02 2a 05 08 01 7a 01 78")), closeRequest(1n));
});

Deno.test("decodePacket() skips a known field number sent with another wire type", () => {
  // Field 1 as bytes and Data.connectID as fixed64: both are ignored, as Go does.
  assert.deepStrictEqual(
    decodePacket(hex("0a 01 04 12 00")),
    dialRequest("", 0n, ""),
  );
  assert.deepStrictEqual(
    decodePacket(hex("08 04 22 0b 09 01 00 00 00 00 00 00 00 1a 00")),
    dataPacket(0n, new Uint8Array(0)),
  );
});

Deno.test("decodePacket() accepts a non-minimal varint and the last value of a repeated field", () => {
  assert.deepStrictEqual(decodePacket(hex("08 81 80 00 08 02 2a 02 08 05")), closeRequest(5n));
  assert.deepStrictEqual(decodePacket(hex("08 02 2a 04 08 05 08 06")), closeRequest(6n));
});

Deno.test("decodePacket() merges a repeated payload member and keeps the last member", () => {
  // The same member twice merges, as protobuf does for message fields.
  assert.deepStrictEqual(
    decodePacket(hex("08 04 22 02 08 01 22 04 1a 02 68 69")),
    dataPacket(1n, utf8.encode("hi")),
  );
  assert.deepStrictEqual(decodePacket(hex("08 02 2a 02 08 01 2a 02 08 02")), closeRequest(2n));
  // A different member replaces the earlier one; the type is checked afterwards.
  assert.deepStrictEqual(
    decodePacket(hex("08 04 12 02 18 01 22 02 08 03")),
    dataPacket(3n, new Uint8Array(0)),
  );
  assertDecodeError(
    hex("08 04 22 02 08 03 12 00"),
    "packet type DATA carries payload dialRequest",
    6,
  );
});

Deno.test("decodePacket() reads the type wherever it appears and keeps the last one", () => {
  assert.deepStrictEqual(decodePacket(hex("42 00 08 06")), drain());
  assert.deepStrictEqual(decodePacket(hex("08 04 2a 02 08 01 08 02")), closeRequest(1n));
});

Deno.test("decodePacket() returns UNKNOWN for a type number it does not know", () => {
  assert.deepStrictEqual(decodePacket(hex("08 07")), { type: "UNKNOWN", typeNumber: 7 });
  assert.deepStrictEqual(decodePacket(hex("08 07 22 02 08 01")), {
    type: "UNKNOWN",
    typeNumber: 7,
  });
  assert.deepStrictEqual(decodePacket(hex("08 63 42 00")), { type: "UNKNOWN", typeNumber: 99 });
  assert.deepStrictEqual(
    decodePacket(hex("08 ff ff ff ff ff ff ff ff ff 01")),
    { type: "UNKNOWN", typeNumber: -1 },
  );
  // Enums are int32: wider values are truncated (2^32 + 4 reads as DATA), as in Go.
  assert.deepStrictEqual(
    decodePacket(hex("08 84 80 80 80 10 22 00")),
    dataPacket(0n, new Uint8Array(0)),
  );
});

Deno.test("decodePacket() rejects a type whose payload is missing or different", () => {
  assertDecodeError(
    new Uint8Array(0),
    "packet type DIAL_REQ has no dialRequest payload",
    0,
  );
  assertDecodeError(hex("08 06"), "packet type DRAIN has no drain payload", 2);
  assertDecodeError(
    hex("08 04 12 00"),
    "packet type DATA carries payload dialRequest",
    2,
  );
  assertDecodeError(hex("22 00"), "packet type DIAL_REQ carries payload data", 0);
  assertDecodeError(hex("08 01 3a 00"), /^packet type DIAL_RSP carries payload closeDial/);
  assertDecodeError(hex("08 03 2a 00"), /^packet type CLOSE_RSP carries payload closeRequest/);
});

Deno.test("decodePacket() rejects malformed bytes with the offset of the fault", () => {
  const cases: [string, RegExp, number][] = [
    ["80", /^truncated varint at offset 0$/, 0],
    ["08", /^truncated varint at offset 1$/, 1],
    ["08 80", /^truncated varint/, 1],
    ["08 04 22 02 08 80", /^truncated varint/, 5],
    ["08 04 22 05 08 01", /^length 5 exceeds the 2 remaining bytes at offset 3$/, 3],
    ["08 04 22 03 1a 05 68 69", /^length 5 exceeds the 1 remaining bytes/, 5],
    ["08 04 22 ff ff ff ff ff ff ff ff 7f", /^length \d+ exceeds/, 3],
    ["08 ff ff ff ff ff ff ff ff ff ff 01", /^varint longer than 10 bytes at offset 1$/, 1],
    ["08 ff ff ff ff ff ff ff ff ff 02", /^varint overflowing 64 bits/, 1],
    ["0b", /^unsupported group wire type 3 at offset 0$/, 0],
    ["08 04 0c", /^unsupported group wire type 4/, 2],
    ["08 04 22 01 0b", /^unsupported group wire type 3/, 4],
    ["0e 00", /^invalid wire type 6/, 0],
    ["08 04 22 01 0f", /^invalid wire type 7/, 4],
    ["00", /^invalid field number 0 at offset 0$/, 0],
    ["08 04 22 02 00 00", /^invalid field number 0/, 4],
    ["80 00", /^invalid field number 0/, 0],
    ["80 80 80 80 10 00", /^field number above 2\^29-1/, 0],
    ["09 01 02 03", /^truncated fixed-width field at offset 1$/, 1],
    ["08 04 22 02 0d 01", /^truncated fixed-width field/, 5],
    ["08 04 22 03 2d 01 02 03", /^truncated fixed-width field/, 5],
  ];
  for (const [bytes, message, offset] of cases) assertDecodeError(hex(bytes), message, offset);
});

// ------------------------------------------------------------------------- property tests

/** xorshift32: a tiny deterministic PRNG so failures are reproducible. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

function generators(next: () => number) {
  const int = (n: number) => next() % n;
  const int64 = (): bigint => {
    switch (int(6)) {
      case 0:
        return 0n;
      case 1:
        return BigInt(int(300));
      case 2:
        return [
          2n ** 53n - 1n,
          2n ** 53n,
          2n ** 53n + 1n,
          2n ** 63n - 1n,
          -1n,
          -(2n ** 63n),
        ][int(6)]!;
      default: {
        const full = BigInt.asIntN(64, (BigInt(next()) << 32n) | BigInt(next()));
        return full >> BigInt(int(64)); // spread over every varint length, both signs
      }
    }
  };
  const pools: [number, number][] = [
    [0x20, 0x7e],
    [0, 0x7f],
    [0x80, 0x7ff],
    [0x800, 0xd7ff],
    [0xe000, 0xfffd],
    [0x10000, 0x10ffff],
  ];
  const string = (): string => {
    const len = int(4) === 0 ? 0 : int(40);
    let s = int(10) === 0 ? "\uFEFF" : "";
    for (let i = 0; i < len; i++) {
      const [lo, hi] = pools[int(pools.length)]!;
      s += String.fromCodePoint(lo + int(hi - lo + 1));
    }
    return s;
  };
  const bytes = (): Uint8Array => {
    const r = int(20);
    const len = r === 0 ? 0 : r === 1 ? 128 + int(40000) : int(200);
    const out = new Uint8Array(len);
    for (let i = 0; i < len; i++) out[i] = next() & 0xff;
    return out;
  };
  const packet = (): Packet => {
    switch (int(7)) {
      case 0:
        return dialRequest(string(), int64(), string());
      case 1:
        return dialResponse(int64(), int64(), string());
      case 2:
        return closeRequest(int64());
      case 3:
        return closeResponse(int64(), string());
      case 4:
        return { type: "DATA", data: { connectId: int64(), error: string(), data: bytes() } };
      case 5:
        return closeDial(int64());
      default:
        return drain();
    }
  };
  return { int, packet };
}

Deno.test("decodePacket(encodePacket(p)) equals p for 3000 random packets", () => {
  const { packet } = generators(prng(0x5eed1234));
  const kinds = new Set<string>();
  for (let i = 0; i < 3000; i++) {
    const p = packet();
    kinds.add(p.type);
    const bytes = encodePacket(p);
    assert.equal(bytes.length, encodedLength(p));
    const back = decodePacket(bytes);
    assert.deepStrictEqual(back, p, `packet ${i}: ${toHex(bytes.subarray(0, 64))}`);
    assert.deepStrictEqual(encodePacket(back as Packet), bytes);
  }
  assert.equal(kinds.size, 7);
});

Deno.test("decodePacket() only ever returns or throws PacketDecodeError on mutated bytes", () => {
  const next = prng(0xfeedbeef);
  const { int, packet } = generators(next);
  let accepted = 0;
  let rejected = 0;
  for (let i = 0; i < 4000; i++) {
    let bytes: Uint8Array;
    const mode = int(5);
    if (mode === 0) {
      bytes = new Uint8Array(int(40)).map(() => next() & 0xff);
    } else {
      bytes = encodePacket(packet()).slice(0, 300);
      if (mode === 1 && bytes.length > 0) bytes = bytes.subarray(0, int(bytes.length));
      const flips = 1 + int(4);
      for (let f = 0; f < flips && bytes.length > 0; f++) {
        const at = int(bytes.length);
        bytes[at] = mode === 2 ? bytes[at]! ^ (1 << int(8)) : next() & 0xff;
      }
      if (mode === 4) bytes = concat(bytes, Uint8Array.of(next() & 0xff, next() & 0xff));
    }
    let result: DecodedPacket;
    try {
      result = decodePacket(bytes);
    } catch (err) {
      assert.ok(err instanceof PacketDecodeError, `unexpected ${err} for ${toHex(bytes)}`);
      assert.ok(err.offset >= 0 && err.offset <= bytes.length, err.message);
      rejected++;
      continue;
    }
    accepted++;
    if (result.type !== "UNKNOWN") {
      // Whatever was accepted must survive a round trip unchanged.
      assert.deepStrictEqual(decodePacket(encodePacket(result)), result);
    }
  }
  assert.ok(accepted > 100 && rejected > 100, `accepted ${accepted}, rejected ${rejected}`);
});

Deno.test("encodePacket writes the knp KNP_WINDOW extension as type 15, payload field 15", () => {
  const p = knpWindow(1n, 65536);
  const hex = "080f7a06080110808004";
  assert.equal(Array.from(encodePacket(p), (b) => b.toString(16).padStart(2, "0")).join(""), hex);
  assert.deepEqual(decodePacket(encodePacket(p)), p);
});
