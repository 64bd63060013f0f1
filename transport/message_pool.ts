/**
 * Reused buffers for large messages the server receives: gRPC messages on its HTTP/2 streams and
 * WebSocket messages on the agent link. Such a message must be gathered into a buffer of its own
 * (it arrives in views of a read buffer that is reused), and each was a fresh, zeroed allocation:
 * at a few hundred MB/s that is as many bytes of garbage per second, and V8's collections of it.
 * Measured with the bench's 1-connection transfers through the gRPC frontend (same-run A/B,
 * medians of 4): upload 592 -> 805 MB/s and server + agent CPU 2.6 -> 1.7 s/GiB with pooled gRPC
 * messages; download 412 -> 438 MB/s and 3.1 -> 2.7 s/GiB with pooled agent-link messages too.
 *
 * {@linkcode takeMessageBuffer} hands out a buffer; {@linkcode giveBackMessageBuffer} returns it
 * once nothing refers to its bytes any more. Only a holder that knows that may give it back: the
 * WebSocket packet stream after copying a packet into its frame (the packet's payload is a view of
 * its message), the HTTP/2 outbox and the socket writer (byte_socket.ts: HTTP-CONNECT clients,
 * the agent's backend connections) once their write is done. A WebSocket message of several
 * packets is shared among them ({@linkcode shareMessageBuffer}): the last to give it back returns
 * it, so each holder gives back once. A buffer not given back by all
 * is garbage-collected as before; giving back something not taken here is ignored.
 *
 * A pooled buffer may be up to 16 KiB larger than its message, and its bytes past the message are
 * an earlier message's: only the server (its HTTP/2 streams, its end of the agent link's
 * WebSocket) and the agent (its end of that link) take pooled buffers, never the client library,
 * whose caller sees them.
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
/**
 * Buffers handed out and not given back, with how many holders must still give each back (weak:
 * one never given back is still collected).
 */
const lent = new WeakMap<ArrayBuffer, number>();

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
  lent.set(buffer, 1);
  return new Uint8Array(buffer, 0, bytes);
}

/** True when `view` lies in a buffer lent by {@linkcode takeMessageBuffer} and not back yet. */
export function isLentMessageBuffer(view: Uint8Array): boolean {
  return lent.has(view.buffer as ArrayBuffer);
}

/**
 * Splits the one holder of a lent buffer (the whole message) into `holders` (the packets whose
 * payloads are views of it), each of which gives it back once; with none it goes back now. Only
 * the first holder may do this, before handing views on.
 */
export function shareMessageBuffer(view: Uint8Array, holders: number): void {
  const buffer = view.buffer as ArrayBuffer;
  if (lent.get(buffer) !== 1) return;
  if (holders > 0) lent.set(buffer, holders);
  else giveBackMessageBuffer(view);
}

/**
 * Gives back one holder's share of the buffer `view` lies in, if it came from
 * {@linkcode takeMessageBuffer}; the last share returns it. The caller guarantees that it reads
 * and writes no view of it afterwards.
 */
export function giveBackMessageBuffer(view: Uint8Array): void {
  const buffer = view.buffer;
  if (!(buffer instanceof ArrayBuffer)) return;
  const holders = lent.get(buffer);
  if (holders === undefined) return;
  if (holders > 1) return void lent.set(buffer, holders - 1);
  lent.delete(buffer);
  const size = buffer.byteLength;
  if (freeBytes + size > FREE_MAX_BYTES) return;
  let list = free.get(size);
  if (!list) free.set(size, list = []);
  list.push(buffer);
  freeBytes += size;
}
