/**
 * IP prefixes and longest-prefix lookup, for the `destCIDR` proxy strategy (agents' `cidr`
 * identifiers) and for the destination zones of `--knp-zone-cidrs`.
 *
 * Dial addresses are read the way the destination policy reads them (`parseDialAddress` of
 * `@knp/core/destination_policy`): IPv4 in any `inet_aton` form, IPv6 in brackets, an IPv4
 * address also as its IPv4-mapped IPv6 form. Names are never resolved: a name matches no prefix.
 *
 * @module
 */

import { parseDialAddress } from "@knp/core/destination_policy";
import { FAMILY_BITS, parseIp } from "@knp/core/ip_address";

/** A parsed prefix: `network/prefix` of one address family. */
export interface IpPrefix {
  /** 4 or 6. */
  readonly family: 4 | 6;
  /** The address bits (host bits may be set; they are ignored). */
  readonly network: bigint;
  /** Prefix length in bits. */
  readonly prefix: number;
}

/** The addresses of a dial target: IPv4 (when it is one) and IPv6 (IPv4 in mapped form). */
export interface TargetAddresses {
  /** The IPv4 address, when the host is one. */
  readonly v4: bigint | undefined;
  /** The IPv6 address (an IPv4 address in its mapped form). */
  readonly v6: bigint | undefined;
}

/**
 * Parses `address/prefix` (strict dotted-quad IPv4 or RFC 4291 IPv6, no brackets); undefined
 * when it is not one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseCidr } from "./prefix_table.ts";
 * assert.deepEqual(parseCidr("10.0.0.0/16"), { family: 4, network: 0x0a000000n, prefix: 16 });
 * assert.equal(parseCidr("10.0.0.0/33"), undefined);
 * ```
 */
export function parseCidr(text: string): IpPrefix | undefined {
  const slash = text.indexOf("/");
  if (slash < 0) return undefined;
  const ip = parseIp(text.slice(0, slash));
  const bitsText = text.slice(slash + 1);
  if (ip === undefined || !/^(0|[1-9][0-9]{0,2})$/.test(bitsText)) return undefined;
  const prefix = Number(bitsText);
  if (prefix > FAMILY_BITS[ip.family]) return undefined;
  return { family: ip.family, network: ip.value, prefix };
}

/** The IP addresses of a dial address (`host:port`, `[v6]:port`); undefined for a name. */
export function targetAddresses(address: string): TargetAddresses | undefined {
  const target = parseDialAddress(address);
  if (target === undefined || target.v6 === undefined) return undefined;
  return { v4: target.v4, v6: target.v6 };
}

/** A prefix's identity: family, length and network bits (host bits dropped). */
export function prefixKey(p: IpPrefix): string {
  const shift = BigInt(FAMILY_BITS[p.family] - p.prefix);
  return `${p.family}/${p.prefix}/${(p.network >> shift).toString(16)}`;
}

/**
 * Values under IP prefixes, looked up by address, longest prefix first. Several values may share
 * a prefix (in the order added). Lookups cost one map probe per distinct prefix length in use.
 */
export class PrefixTable<T> {
  readonly #byKey = new Map<string, T[]>();
  /** Prefix lengths in use per family, longest first, with how many keys use each. */
  readonly #lengths: Record<4 | 6, Map<number, number>> = { 4: new Map(), 6: new Map() };

  /** Number of distinct prefixes holding values. */
  get size(): number {
    return this.#byKey.size;
  }

  /** Adds `value` under `prefix` (a no-op when it is there already). */
  add(prefix: IpPrefix, value: T): void {
    const key = prefixKey(prefix);
    const list = this.#byKey.get(key);
    if (list) {
      if (!list.includes(value)) list.push(value);
      return;
    }
    this.#byKey.set(key, [value]);
    const lengths = this.#lengths[prefix.family];
    lengths.set(prefix.prefix, (lengths.get(prefix.prefix) ?? 0) + 1);
    const sorted = [...lengths].sort((a, b) => b[0] - a[0]);
    this.#lengths[prefix.family] = new Map(sorted);
  }

  /** Removes `value` from `prefix` (a no-op when it is not there). */
  remove(prefix: IpPrefix, value: T): void {
    const key = prefixKey(prefix);
    const list = this.#byKey.get(key);
    const i = list?.indexOf(value) ?? -1;
    if (!list || i < 0) return;
    list.splice(i, 1);
    if (list.length > 0) return;
    this.#byKey.delete(key);
    const lengths = this.#lengths[prefix.family];
    const left = (lengths.get(prefix.prefix) ?? 1) - 1;
    if (left > 0) lengths.set(prefix.prefix, left);
    else lengths.delete(prefix.prefix);
  }

  /**
   * Every prefix holding `target`, longest first (IPv4 prefixes for an IPv4 address, then IPv6
   * prefixes, which see an IPv4 address in its mapped form); each entry lists its values.
   */
  *matches(target: TargetAddresses): Generator<{ prefix: number; values: readonly T[] }> {
    for (const family of [4, 6] as const) {
      const value = family === 4 ? target.v4 : target.v6;
      if (value === undefined) continue;
      for (const prefix of this.#lengths[family].keys()) {
        const list = this.#byKey.get(prefixKey({ family, network: value, prefix }));
        if (list && list.length > 0) yield { prefix, values: list };
      }
    }
  }

  /** The values of the longest prefix holding `target`; undefined when none does. */
  longest(target: TargetAddresses): readonly T[] | undefined {
    for (const match of this.matches(target)) return match.values;
    return undefined;
  }
}
