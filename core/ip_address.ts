// This module is browser compatible.
/**
 * IP address parsing for the destination policy: strict dotted-quad IPv4 and RFC 4291 IPv6 for
 * rules, and the lenient IPv4 forms a resolver accepts (`inet_aton`: `127.1`, `0x7f.0.0.1`,
 * `2130706433`) for dial addresses, so that a rule on `127.0.0.0/8` also catches `127.1`.
 *
 * @module
 */

/** An IP address as a number: 32 bits (family 4) or 128 bits (family 6). */
export interface IpAddress {
  /** 4 or 6. */
  readonly family: 4 | 6;
  /** The address bits. */
  readonly value: bigint;
}

/** Bits of each family. */
export const FAMILY_BITS = { 4: 32, 6: 128 } as const;

const DECIMAL_OCTET = /^(0|[1-9][0-9]{0,2})$/;

/** Parses `a.b.c.d` (decimal, no leading zeros, each 0–255); undefined otherwise. */
export function parseIpv4Strict(text: string): bigint | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  let value = 0n;
  for (const part of parts) {
    if (!DECIMAL_OCTET.test(part) || Number(part) > 255) return undefined;
    value = (value << 8n) | BigInt(part);
  }
  return value;
}

/** One `inet_aton` number: `0x` hex, leading-zero octal or decimal. */
function atonPart(part: string): bigint | undefined {
  if (/^0x[0-9a-f]+$/i.test(part)) return BigInt(part);
  if (/^0[0-7]*$/.test(part)) return BigInt(`0o${part.slice(1) || "0"}`);
  if (/^[1-9][0-9]*$/.test(part)) return BigInt(part);
  return undefined;
}

/**
 * Parses every IPv4 form `inet_aton` accepts (1 to 4 parts; the last part fills the remaining
 * bytes), the forms a resolver may turn into an address; undefined otherwise.
 */
export function parseIpv4Loose(text: string): bigint | undefined {
  const parts = text.split(".");
  if (parts.length < 1 || parts.length > 4) return undefined;
  let value = 0n;
  for (const [i, part] of parts.entries()) {
    const n = atonPart(part);
    if (n === undefined) return undefined;
    const last = i === parts.length - 1;
    const bits = last ? BigInt(8 * (5 - parts.length)) : 8n;
    if (n >= 1n << bits) return undefined;
    value = last ? (value << bits) | n : (value << 8n) | n;
  }
  return value;
}

/** The 16-bit groups of one side of `::`; an IPv4 tail counts as two groups. */
function ipv6Groups(text: string, v4Tail: boolean): bigint[] | undefined {
  if (text === "") return [];
  const parts = text.split(":");
  const groups: bigint[] = [];
  for (const [i, part] of parts.entries()) {
    if (v4Tail && i === parts.length - 1 && part.includes(".")) {
      const v4 = parseIpv4Strict(part);
      if (v4 === undefined) return undefined;
      groups.push(v4 >> 16n, v4 & 0xffffn);
    } else if (/^[0-9a-f]{1,4}$/i.test(part)) {
      groups.push(BigInt(`0x${part}`));
    } else {
      return undefined;
    }
  }
  return groups;
}

/** Parses an IPv6 address (`::` shorthand and an IPv4 tail allowed, no zone); undefined otherwise. */
export function parseIpv6(text: string): bigint | undefined {
  const gap = text.indexOf("::");
  if (gap >= 0 && text.indexOf("::", gap + 1) >= 0) return undefined;
  const head = ipv6Groups(gap >= 0 ? text.slice(0, gap) : text, gap < 0);
  const tail = gap >= 0 ? ipv6Groups(text.slice(gap + 2), true) : [];
  if (head === undefined || tail === undefined) return undefined;
  const count = head.length + tail.length;
  if (gap >= 0 ? count > 7 : count !== 8) return undefined;
  const groups = [...head, ...Array<bigint>(8 - count).fill(0n), ...tail];
  return groups.reduce((value, group) => (value << 16n) | group, 0n);
}

/** Strict IPv4 or IPv6 (as rules are written). */
export function parseIp(text: string): IpAddress | undefined {
  const v4 = parseIpv4Strict(text);
  if (v4 !== undefined) return { family: 4, value: v4 };
  const v6 = text.includes(":") ? parseIpv6(text) : undefined;
  return v6 === undefined ? undefined : { family: 6, value: v6 };
}

const MAPPED_PREFIX = 0xffffn << 32n;

/** The IPv4 address inside an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), else undefined. */
export function mappedIpv4(v6: bigint): bigint | undefined {
  return v6 >> 32n === 0xffffn ? v6 & 0xffffffffn : undefined;
}

/** The IPv4-mapped IPv6 form of an IPv4 address. */
export function mapIpv4(v4: bigint): bigint {
  return MAPPED_PREFIX | v4;
}

/** Whether `value` lies in the `prefix`-bit network `network` of `family`. */
export function inNetwork(
  family: 4 | 6,
  network: bigint,
  prefix: number,
  value: bigint,
): boolean {
  const shift = BigInt(FAMILY_BITS[family] - prefix);
  return value >> shift === network >> shift;
}
