/**
 * HPACK against the examples of RFC 7541 Appendix C (golden bytes): integers, literal and
 * indexed fields, the dynamic table across requests, Huffman strings, and eviction; plus the
 * decoder's refusals and the encoder's round trip.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  HpackDecoder,
  HpackEncoder,
  HpackError,
  huffmanDecode,
  huffmanEncode,
  pushInteger,
} from "./hpack.ts";

const hex = (text: string) => Uint8Array.fromHex(text.replace(/\s+/g, ""));

Deno.test("hpack integers: RFC 7541 C.1", () => {
  const out: number[] = [];
  pushInteger(out, 10, 5, 0);
  pushInteger(out, 1337, 5, 0);
  pushInteger(out, 42, 8, 0);
  assert.deepEqual(out, [0x0a, 0x1f, 0x9a, 0x0a, 0x2a]);
});

Deno.test("hpack literal and indexed fields: RFC 7541 C.2", () => {
  const d = new HpackDecoder();
  assert.deepEqual(
    d.decode(hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572")),
    [[
      "custom-key",
      "custom-header",
    ]],
  );
  assert.equal(d.tableSize, 55);
  assert.deepEqual(new HpackDecoder().decode(hex("040c 2f73 616d 706c 652f 7061 7468")), [[
    ":path",
    "/sample/path",
  ]]);
  const never = new HpackDecoder();
  assert.deepEqual(never.decode(hex("1008 7061 7373 776f 7264 0673 6563 7265 74")), [[
    "password",
    "secret",
  ]]);
  assert.equal(never.tableSize, 0);
  assert.deepEqual(new HpackDecoder().decode(hex("82")), [[":method", "GET"]]);
});

const REQUESTS_PLAIN = [
  "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
  "8286 84be 5808 6e6f 2d63 6163 6865",
  "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
];
const REQUESTS_HUFFMAN = [
  "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
  "8286 84be 5886 a8eb 1064 9cbf",
  "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
];
const REQUESTS_EXPECTED = [
  [[":method", "GET"], [":scheme", "http"], [":path", "/"], [":authority", "www.example.com"]],
  [[":method", "GET"], [":scheme", "http"], [":path", "/"], [":authority", "www.example.com"], [
    "cache-control",
    "no-cache",
  ]],
  [[":method", "GET"], [":scheme", "https"], [":path", "/index.html"], [
    ":authority",
    "www.example.com",
  ], ["custom-key", "custom-value"]],
];

for (
  const [name, blocks] of [["C.3 (plain)", REQUESTS_PLAIN], [
    "C.4 (Huffman)",
    REQUESTS_HUFFMAN,
  ]] as const
) {
  Deno.test(`hpack requests on one connection: RFC 7541 ${name}`, () => {
    const d = new HpackDecoder();
    blocks.forEach((block, i) => assert.deepEqual(d.decode(hex(block)), REQUESTS_EXPECTED[i]));
    assert.equal(d.tableSize, 164);
  });
}

Deno.test("hpack responses with eviction: RFC 7541 C.6 (Huffman, table of 256)", () => {
  const d = new HpackDecoder(256);
  assert.deepEqual(
    d.decode(hex(
      "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
    )),
    [[":status", "302"], ["cache-control", "private"], ["date", "Mon, 21 Oct 2013 20:13:21 GMT"], [
      "location",
      "https://www.example.com",
    ]],
  );
  assert.equal(d.tableSize, 222);
  assert.deepEqual(d.decode(hex("4883 640e ffc1 c0bf")), [
    [":status", "307"],
    [
      "cache-control",
      "private",
    ],
    ["date", "Mon, 21 Oct 2013 20:13:21 GMT"],
    ["location", "https://www.example.com"],
  ]);
  assert.equal(d.tableSize, 222);
});

Deno.test("hpack Huffman: encode matches RFC 7541 C.4.1 and round-trips every byte", () => {
  assert.deepEqual(huffmanEncode("www.example.com"), hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff"));
  const all = String.fromCharCode(...Array.from({ length: 256 }, (_, i) => i));
  assert.equal(huffmanDecode(huffmanEncode(all)), all);
});

Deno.test("hpack decoder refuses malformed blocks", () => {
  const bad = [
    "80", // index 0
    "be", // index 62 with an empty dynamic table
    "4005 6162", // string past the end
    "82 3f e1 1f", // table size update after a field
    "3fe2 1f", // table size update above the 4096 limit
    "ff ff ff ff ff 0f", // integer overflow
    "0081 ff 0161", // Huffman string that is all padding (8 bits)
    "0083 ff ff ff 0161", // Huffman EOS inside a string
  ];
  for (const block of bad) {
    assert.throws(() => new HpackDecoder().decode(hex(block)), HpackError, block);
  }
  assert.throws(
    () =>
      new HpackDecoder(4096, 40).decode(
        hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
      ),
    /too large/,
  );
});

Deno.test("hpack encoder: static references, literals, and what the decoder reads back", () => {
  const fields: [string, string][] = [
    [":status", "200"],
    ["content-type", "application/grpc"],
    ["grpc-status", "0"],
    ["grpc-message", "x".repeat(300)],
  ];
  const block = new HpackEncoder().encode(fields);
  assert.equal(block[0], 0x88, ":status 200 is static index 8");
  assert.equal(block[1], 0x0f, "content-type by static name index 31 (4-bit prefix 15 + 16)");
  assert.equal(block[2], 0x10);
  const d = new HpackDecoder();
  assert.deepEqual(d.decode(block), fields);
  assert.equal(d.tableSize, 0, "the encoder never inserts into the table");
});
