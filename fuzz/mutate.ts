/**
 * Byte-level mutations for structure-aware fuzzing: bit flips, byte inserts and deletes,
 * truncation, splicing, duplicated runs, and varint/length fields set to edge values.
 *
 * @module
 */
import type { Rng } from "./rng.ts";

/** Varint encodings of edge values: 0, 1, 127, 128, 2^31±1, 2^32, 2^53, 2^63, 2^64-1, overlong. */
export const EDGE_VARINTS: readonly (readonly number[])[] = [
  [0x00],
  [0x01],
  [0x7f],
  [0x80, 0x01],
  [0xff, 0x7f],
  [0xff, 0xff, 0x03],
  [0xff, 0xff, 0xff, 0xff, 0x07],
  [0xff, 0xff, 0xff, 0xff, 0x0f],
  [0x80, 0x80, 0x80, 0x80, 0x10],
  [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f],
  [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
  [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
  [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
  [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
  [0x80, 0x00],
  [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
  [0x80],
  [0xff, 0xff],
];

const INTERESTING_BYTES = [
  0x00,
  0x01,
  0x02,
  0x07,
  0x08,
  0x0a,
  0x0d,
  0x20,
  0x3a,
  0x7e,
  0x7f,
  0x80,
  0x81,
  0xc0,
  0xe0,
  0xef,
  0xf0,
  0xff,
];

function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/** Applies one random mutation; `other` is material for splicing. */
export function mutateOnce(rng: Rng, input: Uint8Array, other: Uint8Array): Uint8Array {
  const n = input.length;
  const at = rng.int(n + 1);
  switch (rng.int(11)) {
    case 0: { // bit flip
      if (n === 0) return rng.bytes(1);
      const out = input.slice();
      out[rng.int(n)]! ^= 1 << rng.int(8);
      return out;
    }
    case 1: { // interesting byte
      if (n === 0) return Uint8Array.of(rng.pick(INTERESTING_BYTES));
      const out = input.slice();
      out[rng.int(n)] = rng.pick(INTERESTING_BYTES);
      return out;
    }
    case 2: // insert random bytes
      return concat(input.subarray(0, at), rng.bytes(rng.size(32)), input.subarray(at));
    case 3: // delete a run
      return concat(input.subarray(0, at), input.subarray(Math.min(n, at + rng.size(16))));
    case 4: // truncate
      return input.slice(0, at);
    case 5: // splice with the other input
      return concat(input.subarray(0, at), other.subarray(rng.int(other.length + 1)));
    case 6: { // duplicate a run
      const from = rng.int(n + 1);
      const run = input.subarray(from, from + rng.size(32));
      return concat(input.subarray(0, at), run, input.subarray(at));
    }
    case 7: // overwrite with an edge varint
      return concat(
        input.subarray(0, at),
        Uint8Array.from(rng.pick(EDGE_VARINTS)),
        input.subarray(Math.min(n, at + rng.range(1, 3))),
      );
    case 8: // insert an edge varint
      return concat(
        input.subarray(0, at),
        Uint8Array.from(rng.pick(EDGE_VARINTS)),
        input.subarray(at),
      );
    case 9: { // random byte
      if (n === 0) return rng.bytes(1);
      const out = input.slice();
      out[rng.int(n)] = rng.u32() & 0xff;
      return out;
    }
    default: { // add or subtract a small number from a byte (length fields)
      if (n === 0) return rng.bytes(2);
      const out = input.slice();
      const i = rng.int(n);
      out[i] = (out[i]! + rng.pick([1, 2, 3, 127, 128, 254, 255])) & 0xff;
      return out;
    }
  }
}

/** Applies 1 to `max` random mutations. */
export function mutate(rng: Rng, input: Uint8Array, other: Uint8Array, max = 4): Uint8Array {
  let out = input;
  const rounds = rng.range(1, max);
  for (let i = 0; i < rounds; i++) out = mutateOnce(rng, out, other);
  return out;
}

/** Joins byte arrays. */
export { concat };
