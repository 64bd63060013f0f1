/**
 * Building RFC 6455 frames: masked client frames and unmasked server frames, with the payload
 * written in place ({@linkcode encodeFrameWith}) into pooled buffers for large frames
 * ({@linkcode releaseFrame}), and write coalescing ({@linkcode coalesceFrames}). No I/O.
 *
 * @module
 */

/**
 * Response header of a knp server's `101` on the agent link: the server takes client frames whose
 * masking key is 0. RFC 6455 has clients mask with fresh random keys so that a cache or proxy on
 * the path that does not speak WebSocket cannot be fed attacker-chosen bytes; the agent link runs
 * inside TLS between a knp agent and a knp server, where no such intermediary sees the frames, and
 * XOR-masking every byte cost each side ~8 % of its CPU on a download (profiled: 100 connections ×
 * 10 MiB). A frame with key 0 is still a well-formed masked frame (XOR with 0 changes nothing), so
 * a server that did not announce this never receives one, and one that did skips the unmasking.
 */
export const ZERO_MASK_HEADER = "knp-zero-mask-key";

/** Random mask keys, drawn from a pool refilled by `crypto.getRandomValues`. */
const maskPool = new Uint32Array(1024);
let maskPoolPos = maskPool.length;

function nextMask(): number {
  if (maskPoolPos === maskPool.length) {
    crypto.getRandomValues(maskPool);
    maskPoolPos = 0;
  }
  return maskPool[maskPoolPos++]!;
}

/** XORs `len` bytes of `buf` from `offset` (a multiple of 4) with the 4-byte mask `word`. */
export function maskInPlace(buf: ArrayBuffer, offset: number, len: number, word: number): void {
  const words = len >>> 2;
  const w = new Uint32Array(buf, offset, words);
  for (let i = 0; i < words; i++) w[i]! ^= word;
  const tail = len & 3;
  if (tail) {
    const bytes = new Uint8Array(buf, offset + (words << 2), tail);
    const mask = new Uint8Array(Uint32Array.of(word).buffer);
    for (let i = 0; i < tail; i++) bytes[i]! ^= mask[i]!;
  }
}

/**
 * Size of a pooled frame buffer: a message of a batch just under 256 KiB plus the packet that
 * crossed that mark (a 256 KiB gRPC message, say), the largest header and alignment padding.
 */
export const FRAME_SLOT_BYTES: number = 512 * 1024 + 16;
/** Frames with at least this much payload (and fitting a slot) are built in pooled buffers. */
const POOLED_PAYLOAD_MIN = 64 * 1024;
/** Pooled frame buffers kept while unused (4 MiB). */
const FRAME_POOL_MAX = 8;
const framePool: ArrayBuffer[] = [];

/**
 * Gives back the buffer of a frame built by {@linkcode encodeFrameWith} once the socket has
 * written it (the frame's bytes must no longer be referenced). Large frames then reuse buffers
 * instead of allocating (and zeroing) 256 KiB per message, which is what drives V8's
 * old-generation collections on a busy link. Buffers of any other size are left alone.
 */
export function releaseFrame(frame: Uint8Array): void {
  const buffer = frame.buffer;
  if (
    buffer instanceof ArrayBuffer && buffer.byteLength === FRAME_SLOT_BYTES &&
    framePool.length < FRAME_POOL_MAX
  ) framePool.push(buffer);
}

/** Writes a frame's payload: `length` bytes into `out` starting at `offset`. */
export type PayloadWriter = (out: Uint8Array, offset: number) => void;

/**
 * Builds one frame with FIN set whose `length`-byte payload `fill` writes in place, so a payload
 * made of parts (a batch of packets) is copied once, straight into the frame. With `masked` (a
 * client's frame) the payload starts 4-byte aligned in its buffer and is masked a word at a time
 * after `fill` ran; with `zeroKey` too, its masking key is 0 and the payload is left as it is
 * (only toward a server that announced {@linkcode ZERO_MASK_HEADER}).
 */
export function encodeFrameWith(
  opcode: number,
  length: number,
  masked: boolean,
  fill: PayloadWriter,
  zeroKey = false,
): Uint8Array {
  const ext = length < 126 ? 0 : length < 0x10000 ? 2 : 8;
  const head = 2 + ext + (masked ? 4 : 0);
  const pad = masked ? (4 - (head & 3)) & 3 : 0;
  const size = pad + head + length;
  // A pooled buffer is not zeroed: every byte of the frame is written below.
  const buffer = length >= POOLED_PAYLOAD_MIN && size <= FRAME_SLOT_BYTES
    ? framePool.pop() ?? new ArrayBuffer(FRAME_SLOT_BYTES)
    : new ArrayBuffer(size);
  const frame = new Uint8Array(buffer, pad, head + length);
  const maskBit = masked ? 0x80 : 0;
  frame[0] = 0x80 | opcode;
  if (ext === 0) frame[1] = maskBit | length;
  else if (ext === 2) {
    frame[1] = maskBit | 126;
    frame[2] = length >>> 8;
    frame[3] = length & 0xff;
  } else {
    frame[1] = maskBit | 127;
    const view = new DataView(buffer, pad + 2, 8);
    view.setUint32(0, Math.floor(length / 0x1_0000_0000));
    view.setUint32(4, length >>> 0);
  }
  fill(frame, head);
  if (masked) {
    const word = zeroKey ? 0 : nextMask();
    new Uint32Array(buffer, pad + head - 4, 1)[0] = word;
    if (word !== 0) maskInPlace(buffer, pad + head, length, word);
  }
  return frame;
}

/**
 * Builds one masked client frame with FIN set. The payload starts 4-byte aligned in its buffer so
 * masking runs a word at a time. Exported for tests.
 */
export function encodeClientFrame(
  opcode: number,
  payload: Uint8Array,
  zeroKey = false,
): Uint8Array {
  return encodeFrameWith(opcode, payload.length, true, (out, at) => out.set(payload, at), zeroKey);
}

/** Builds one unmasked server frame with FIN set. Exported for tests. */
export function encodeServerFrame(opcode: number, payload: Uint8Array): Uint8Array {
  return encodeFrameWith(opcode, payload.length, false, (out, at) => out.set(payload, at));
}

/**
 * The write starting at `batch[from]`: that frame alone, or (when it is under `limit` bytes) it
 * and the frames after it copied into one buffer of at most `limit` bytes. Returns the bytes and
 * the index of the first frame not included.
 */
export function coalesceFrames(
  batch: readonly Uint8Array[],
  from: number,
  limit: number,
): [Uint8Array, number] {
  const first = batch[from]!;
  let end = from + 1;
  if (first.length >= limit) return [first, end];
  let size = first.length;
  while (end < batch.length && size + batch[end]!.length <= limit) size += batch[end++]!.length;
  if (end === from + 1) return [first, end];
  const joined = new Uint8Array(size);
  let pos = 0;
  for (let i = from; i < end; i++) {
    joined.set(batch[i]!, pos);
    pos += batch[i]!.length;
  }
  return [joined, end];
}
