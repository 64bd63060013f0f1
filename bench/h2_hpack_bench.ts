/**
 * Micro-benchmarks of HPACK in the native HTTP/2 transport: decoding a grpc-go request header
 * block (Huffman strings, dynamic-table references after the first request) and encoding the
 * response headers and trailers the server sends per call.
 *
 * @module
 */

import { HpackDecoder, HpackEncoder, huffmanEncode, pushInteger } from "../transport/h2/hpack.ts";

/** A request block the way Go's hpack writes it: indexed names, Huffman values, incremental indexing. */
function requestBlock(): Uint8Array {
  const out: number[] = [0x83, 0x86]; // :method POST, :scheme http
  const literal = (nameIndex: number, value: string) => {
    pushInteger(out, nameIndex, 6, 0x40);
    const h = huffmanEncode(value);
    pushInteger(out, h.length, 7, 0x80);
    out.push(...h);
  };
  literal(4, "/ProxyService/Proxy");
  literal(1, "localhost");
  literal(31, "application/grpc");
  literal(58, "grpc-go/1.72.0");
  out.push(0x40);
  const name = huffmanEncode("te");
  pushInteger(out, name.length, 7, 0x80);
  out.push(...name);
  const value = huffmanEncode("trailers");
  pushInteger(out, value.length, 7, 0x80);
  out.push(...value);
  return Uint8Array.from(out);
}

const first = requestBlock();
/** The same request again: every field now a dynamic-table index. */
const repeat = Uint8Array.from([0x83, 0x86, 0xc2, 0xc1, 0xc0, 0xbf, 0xbe]);

Deno.bench({
  name: "decode a grpc-go request block (Huffman, new entries)",
  group: "h2-hpack",
  baseline: true,
}, () => {
  new HpackDecoder().decode(first);
});

const warm = new HpackDecoder();
warm.decode(first);
Deno.bench({ name: "decode a repeated request (dynamic-table indexes)", group: "h2-hpack" }, () => {
  warm.decode(repeat);
});

const encoder = new HpackEncoder();
Deno.bench({ name: "encode response headers + trailers", group: "h2-hpack" }, () => {
  encoder.encode([[":status", "200"], ["content-type", "application/grpc"], [
    "serverid",
    "1f2e3d4c",
  ], [
    "servercount",
    "3",
  ]]);
  encoder.encode([["grpc-status", "0"]]);
});
