/**
 * Reused buffers for large received gRPC messages. A gRPC message spread over many DATA frames
 * must be gathered into a buffer of its own (the frames are views of a read buffer that is
 * reused), and each such buffer was a fresh, zeroed allocation: at a few hundred MB/s of uploads
 * through the server that is as many bytes of garbage per second, and V8's collections of it.
 * Measured with the bench's 1-connection upload through the gRPC frontend (256 KiB messages from
 * the Go client), reusing them cut the server + agent CPU per GiB by about a seventh.
 *
 * {@linkcode takeMessageBuffer} hands out a buffer; {@linkcode giveBackMessageBuffer} returns it
 * once nothing refers to its bytes any more. Only a holder that knows that may give it back: the
 * WebSocket packet stream does after copying a packet into its frame (the packet's payload is a
 * view of its message). A buffer nobody gives back is garbage-collected as before. Giving back
 * something that was not taken here, or twice, is ignored, so a buffer is never handed out to
 * two holders. A pooled buffer may be up to 16 KiB larger than its message, and its bytes past
 * the message are another message's: only the server takes pooled buffers (see
 * {@linkcode MessageDeframer}'s `pooled`), never the client library, whose caller sees them.
 *
 * @module
 */

/** Messages from this size on come from the pool. */
const POOL_MIN_BYTES = 64 * 1024;
/** Larger messages are allocated as before. */
const POOL_MAX_BYTES = 512 * 1024;
/** Buffer sizes are multiples of this (a buffer is at most this much larger than its message). */
const CLASS_BYTES = 16 * 1024;
/** Bytes of free buffers kept, all classes together. */
const FREE_MAX_BYTES = 4 * 1024 * 1024;

const free = new Map<number, ArrayBuffer[]>();
let freeBytes = 0;
/** Buffers handed out and not given back (weak: one never given back is still collected). */
const lent = new WeakSet<ArrayBuffer>();

function classOf(bytes: number): number {
  return Math.ceil(bytes / CLASS_BYTES) * CLASS_BYTES;
}

/**
 * A buffer of exactly `bytes` (its contents undefined for a pooled one: the caller fills all of
 * it), from the pool when the size is in its range.
 */
export function takeMessageBuffer(bytes: number): Uint8Array<ArrayBuffer> {
  if (bytes < POOL_MIN_BYTES || bytes > POOL_MAX_BYTES) return new Uint8Array(bytes);
  const size = classOf(bytes);
  let buffer = free.get(size)?.pop();
  if (buffer) freeBytes -= size;
  else buffer = new ArrayBuffer(size);
  lent.add(buffer);
  return new Uint8Array(buffer, 0, bytes);
}

/**
 * Returns the buffer `view` lies in, if it came from {@linkcode takeMessageBuffer} and was not
 * given back yet. The caller guarantees nothing reads or writes any view of it afterwards.
 */
export function giveBackMessageBuffer(view: Uint8Array): void {
  const buffer = view.buffer;
  if (!(buffer instanceof ArrayBuffer) || !lent.delete(buffer)) return;
  const size = buffer.byteLength;
  if (freeBytes + size > FREE_MAX_BYTES) return;
  let list = free.get(size);
  if (!list) free.set(size, list = []);
  list.push(buffer);
  freeBytes += size;
}
