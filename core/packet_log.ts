/**
 * `packetFields`: the log fields of one packet, for the per-packet trace records the binaries
 * write at klog `-v=5` and above (`log.trace?.("packet from agent", packetFields(packet))`).
 * Never the DATA bytes themselves, only their count; a DIAL_REQ's `traceparent` (knp's trace
 * context) when it carries one.
 *
 * ```ts
 * import { dataPacket } from "@knp/proto";
 *
 * console.log(packetFields(dataPacket(3n, new Uint8Array(5))));
 * // { type: "DATA", connectID: 3n, bytes: 5 }
 * ```
 *
 * @module
 */

import type { DecodedPacket } from "@knp/proto";
import type { LogFields } from "./log.ts";

/** The type, IDs and byte count of `packet`, with upstream's field names. */
export function packetFields(packet: DecodedPacket): LogFields {
  switch (packet.type) {
    case "DIAL_REQ": {
      const { random, address, traceparent } = packet.dialRequest;
      return {
        type: packet.type,
        dialID: random,
        address,
        ...(traceparent ? { traceparent } : {}),
      };
    }
    case "DIAL_RSP": {
      const { random, connectId, error } = packet.dialResponse;
      return {
        type: packet.type,
        dialID: random,
        connectID: connectId,
        ...(error ? { error } : {}),
      };
    }
    case "DATA":
      return {
        type: packet.type,
        connectID: packet.data.connectId,
        bytes: packet.data.data.byteLength,
      };
    case "CLOSE_REQ":
      return { type: packet.type, connectID: packet.closeRequest.connectId };
    case "CLOSE_RSP": {
      const { connectId, error } = packet.closeResponse;
      return { type: packet.type, connectID: connectId, ...(error ? { error } : {}) };
    }
    case "DIAL_CLS":
      return { type: packet.type, dialID: packet.closeDial.random };
    case "KNP_WINDOW":
      return {
        type: packet.type,
        connectID: packet.knpWindow.connectId,
        bytes: packet.knpWindow.bytes,
      };
    case "DRAIN":
      return { type: packet.type };
    default:
      return { type: packet.type, typeNumber: packet.typeNumber };
  }
}
