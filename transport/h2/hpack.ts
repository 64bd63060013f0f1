/**
 * HPACK (RFC 7541), as much as a gRPC server needs: a complete, strict decoder (static and
 * dynamic table, table size updates, Huffman strings, header list size limit) and a small encoder
 * that never touches the peer's dynamic table (static-table references and plain literals without
 * indexing), so nothing the encoder sends depends on the peer's table size setting.
 *
 * Every decoding failure is an {@linkcode HpackError}: HTTP/2 makes it a connection error of type
 * COMPRESSION_ERROR, since the two tables can no longer agree.
 *
 * @module
 */

import { HUFFMAN_CODES, HUFFMAN_LENGTHS, STATIC_TABLE } from "./hpack_tables.ts";

/** A header field: name and value. */
export type HeaderField = [name: string, value: string];

/** A malformed header block (an HTTP/2 COMPRESSION_ERROR). */
export class HpackError extends Error {
  /** An error saying what was wrong with the block. */
  constructor(message: string) {
    super(`hpack: ${message}`);
    this.name = "HpackError";
  }
}

/** Overhead of a dynamic table entry besides its name and value (RFC 7541 §4.1). */
const ENTRY_OVERHEAD = 32;

/** The Huffman decoding tree: pairs of children; a leaf is stored as -(symbol + 1). */
const TREE = buildTree();

function buildTree(): Int32Array {
  const tree = new Int32Array(2 * 512).fill(0);
  let next = 1;
  for (let symbol = 0; symbol < 257; symbol++) {
    const length = HUFFMAN_LENGTHS[symbol]!;
    const code = HUFFMAN_CODES[symbol]!;
    let node = 0;
    for (let bit = length - 1; bit >= 0; bit--) {
      const slot = node * 2 + (Math.floor(code / 2 ** bit) & 1);
      if (bit === 0) tree[slot] = -(symbol + 1);
      else {
        if (tree[slot] === 0) tree[slot] = next++;
        node = tree[slot]!;
      }
    }
  }
  return tree;
}

/** Decodes a Huffman-coded string (RFC 7541 §5.2), rejecting EOS and bad padding. */
export function huffmanDecode(bytes: Uint8Array): string {
  let out = "";
  let node = 0;
  let depth = 0;
  let ones = true;
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i]!;
    for (let bit = 7; bit >= 0; bit--) {
      const b = (byte >> bit) & 1;
      const child = TREE[node * 2 + b]!;
      depth++;
      ones &&= b === 1;
      if (child < 0) {
        if (child === -257) throw new HpackError("EOS symbol in a Huffman string");
        out += String.fromCharCode(-child - 1);
        node = 0;
        depth = 0;
        ones = true;
      } else node = child;
    }
  }
  if (depth > 7) throw new HpackError("Huffman padding longer than 7 bits");
  if (!ones) throw new HpackError("Huffman padding is not a prefix of EOS");
  return out;
}

/** Huffman-encodes a string of bytes (code points 0..255). */
export function huffmanEncode(text: string): Uint8Array {
  let bits = 0;
  for (let i = 0; i < text.length; i++) bits += HUFFMAN_LENGTHS[text.charCodeAt(i) & 0xff]!;
  const out = new Uint8Array(Math.ceil(bits / 8));
  let pos = 0;
  let acc = 0;
  let accBits = 0;
  for (let i = 0; i < text.length; i++) {
    const symbol = text.charCodeAt(i) & 0xff;
    const length = HUFFMAN_LENGTHS[symbol]!;
    const code = HUFFMAN_CODES[symbol]!;
    for (let bit = length - 1; bit >= 0; bit--) {
      acc = (acc << 1) | (Math.floor(code / 2 ** bit) & 1);
      if (++accBits === 8) {
        out[pos++] = acc;
        acc = 0;
        accBits = 0;
      }
    }
  }
  if (accBits > 0) out[pos] = (acc << (8 - accBits)) | (0xff >> accBits);
  return out;
}

/** A cursor over a header block. */
class Reader {
  pos = 0;
  constructor(readonly bytes: Uint8Array) {}

  /** Reads an integer with an N-bit prefix (RFC 7541 §5.1). */
  integer(prefixBits: number): number {
    const max = (1 << prefixBits) - 1;
    let value = this.bytes[this.pos++]! & max;
    if (value < max) return value;
    let shift = 0;
    for (;;) {
      if (this.pos >= this.bytes.length) throw new HpackError("truncated integer");
      const byte = this.bytes[this.pos++]!;
      value += (byte & 0x7f) * 2 ** shift;
      shift += 7;
      if (value > 0x7fffffff) throw new HpackError("integer overflow");
      if ((byte & 0x80) === 0) return value;
    }
  }

  /** Reads a string literal (RFC 7541 §5.2). */
  string(): string {
    if (this.pos >= this.bytes.length) throw new HpackError("truncated string");
    const huffman = (this.bytes[this.pos]! & 0x80) !== 0;
    const length = this.integer(7);
    if (this.pos + length > this.bytes.length) throw new HpackError("string past block end");
    const raw = this.bytes.subarray(this.pos, this.pos + length);
    this.pos += length;
    if (huffman) return huffmanDecode(raw);
    let out = "";
    for (let i = 0; i < raw.length; i++) out += String.fromCharCode(raw[i]!);
    return out;
  }
}

/** Decodes header blocks of one direction of one connection. */
export class HpackDecoder {
  #dynamic: HeaderField[] = [];
  #size = 0;
  #maxSize: number;
  readonly #limit: number;
  readonly #maxListSize: number;

  /**
   * A decoder whose table may hold `tableSizeLimit` bytes (the SETTINGS_HEADER_TABLE_SIZE we
   * advertised) and that accepts header lists up to `maxListSize` bytes (RFC 7540 §6.5.2 size).
   */
  constructor(tableSizeLimit = 4096, maxListSize = 64 * 1024) {
    this.#limit = tableSizeLimit;
    this.#maxSize = tableSizeLimit;
    this.#maxListSize = maxListSize;
  }

  /** Bytes the dynamic table holds now. */
  get tableSize(): number {
    return this.#size;
  }

  /**
   * Decodes one complete header block.
   * @throws {HpackError} when the block is malformed or the list is too large
   */
  decode(block: Uint8Array): HeaderField[] {
    const reader = new Reader(block);
    const fields: HeaderField[] = [];
    let listSize = 0;
    let updatesAllowed = true;
    while (reader.pos < block.length) {
      const byte = block[reader.pos]!;
      if ((byte & 0xe0) === 0x20) {
        if (!updatesAllowed) throw new HpackError("table size update after a header field");
        this.#resize(reader.integer(5));
        continue;
      }
      updatesAllowed = false;
      const field = this.#field(reader, byte);
      listSize += field[0].length + field[1].length + ENTRY_OVERHEAD;
      if (listSize > this.#maxListSize) throw new HpackError("header list too large");
      fields.push(field);
    }
    return fields;
  }

  #field(reader: Reader, byte: number): HeaderField {
    if (byte & 0x80) {
      const index = reader.integer(7);
      if (index === 0) throw new HpackError("index 0");
      return this.#entry(index);
    }
    const indexing = (byte & 0xc0) === 0x40;
    const nameIndex = reader.integer(indexing ? 6 : 4);
    const name = nameIndex === 0 ? reader.string() : this.#entry(nameIndex)[0];
    const value = reader.string();
    const field: HeaderField = [name, value];
    if (indexing) this.#insert(field);
    return field;
  }

  #entry(index: number): HeaderField {
    const fixed = STATIC_TABLE[index - 1];
    if (fixed) return [fixed[0], fixed[1]];
    const entry = this.#dynamic[index - STATIC_TABLE.length - 1];
    if (!entry) throw new HpackError(`index ${index} is past the table`);
    return entry;
  }

  #insert(field: HeaderField): void {
    const size = field[0].length + field[1].length + ENTRY_OVERHEAD;
    this.#dynamic.unshift(field);
    this.#size += size;
    this.#evict();
    if (size > this.#maxSize) {
      this.#dynamic = [];
      this.#size = 0;
    }
  }

  #resize(size: number): void {
    if (size > this.#limit) throw new HpackError(`table size ${size} above ${this.#limit}`);
    this.#maxSize = size;
    this.#evict();
  }

  #evict(): void {
    while (this.#size > this.#maxSize && this.#dynamic.length > 0) {
      const [name, value] = this.#dynamic.pop()!;
      this.#size -= name.length + value.length + ENTRY_OVERHEAD;
    }
  }
}

const STATIC_EXACT = new Map<string, number>();
const STATIC_NAME = new Map<string, number>();
STATIC_TABLE.forEach(([name, value], i) => {
  if (!STATIC_EXACT.has(`${name}\0${value}`)) STATIC_EXACT.set(`${name}\0${value}`, i + 1);
  if (!STATIC_NAME.has(name)) STATIC_NAME.set(name, i + 1);
});

/**
 * Encodes header blocks without a dynamic table: exact static matches as indexes, everything
 * else as a literal without indexing (names by static index where one exists), strings raw.
 * Header values must be bytes (code points below 256); names lowercase.
 */
export class HpackEncoder {
  /** Encodes `fields` into one header block. */
  encode(fields: Iterable<HeaderField>): Uint8Array {
    const out: number[] = [];
    for (const [name, value] of fields) {
      const exact = STATIC_EXACT.get(`${name}\0${value}`);
      if (exact !== undefined) {
        pushInteger(out, exact, 7, 0x80);
        continue;
      }
      const nameIndex = STATIC_NAME.get(name);
      if (nameIndex !== undefined) pushInteger(out, nameIndex, 4, 0x00);
      else {
        out.push(0x00);
        pushString(out, name);
      }
      pushString(out, value);
    }
    return Uint8Array.from(out);
  }
}

/** Appends an integer with an N-bit prefix whose other bits are `flags`. */
export function pushInteger(out: number[], value: number, prefixBits: number, flags: number): void {
  const max = (1 << prefixBits) - 1;
  if (value < max) {
    out.push(flags | value);
    return;
  }
  out.push(flags | max);
  value -= max;
  while (value >= 0x80) {
    out.push((value & 0x7f) | 0x80);
    value = Math.floor(value / 0x80);
  }
  out.push(value);
}

function pushString(out: number[], text: string): void {
  pushInteger(out, text.length, 7, 0x00);
  for (let i = 0; i < text.length; i++) out.push(text.charCodeAt(i) & 0xff);
}
