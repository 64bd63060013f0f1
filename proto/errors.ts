/**
 * The wire layer's own error. It carries the same stable `code` field as every knp error, so
 * callers classify it the same way, without `proto` depending on any other package.
 *
 * @module
 */

/** Bytes on the wire could not be decoded as a Packet. */
export class PacketDecodeError extends Error {
  /** Stable, machine-readable error code. */
  readonly code = "PACKET_DECODE" as const;
  /** Byte offset in the message where decoding failed. */
  readonly offset: number;
  /** Creates the error; `offset` is where in the message decoding failed. */
  constructor(message: string, offset: number, options?: ErrorOptions) {
    super(message, options);
    this.name = "PacketDecodeError";
    this.offset = offset;
  }
}
