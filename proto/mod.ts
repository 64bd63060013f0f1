// This module is browser compatible.
/**
 * The Konnectivity wire layer: the `Packet` type and its builders, a dependency-free protobuf
 * codec that is byte-compatible with the Go implementation, and the gRPC method paths and
 * metadata keys. Nothing here performs I/O.
 *
 * @example Round-trip a packet
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodePacket, dialRequest, encodePacket } from "./mod.ts";
 *
 * const packet = dialRequest("10.0.0.7:10250", 9007199254740993n);
 * assert.deepEqual(decodePacket(encodePacket(packet)), packet);
 * ```
 *
 * @module
 */
export * from "./packet.ts";
export * from "./codec.ts";
export * from "./decode_packet.ts";
export * from "./header.ts";
export * from "./errors.ts";
