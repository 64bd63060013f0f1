/**
 * What `--proxy-server-host` names: one host (a load balancer, upstream's only form), a comma
 * list of hosts, or a DNS name with several A/AAAA records. With more than one address the
 * agent connects to each directly (see `client_set.ts`), so it reaches every server without
 * re-dialing a load balancer until it is lucky. Names are resolved again at every sync round
 * that needs a connection, so a DNS change (a server added or replaced) is followed.
 *
 * TLS keeps verifying the configured name: an address found by resolving `name` carries
 * `serverName: name`.
 *
 * @module
 */

import { isIP } from "node:net";
import { errorMessage } from "@knp/core/errors";
import { type Logger, nullLogger } from "@knp/core/log";

/** One address to connect to. */
export interface ServerAddress {
  /** Host to connect to: an IP address, or a name left to the system resolver. */
  host: string;
  /** Name the server's certificate is verified against. */
  serverName: string;
}

/** Looks up the records of one type (`Deno.resolveDns`'s shape); `signal` bounds the wait. */
export type DnsResolver = (
  name: string,
  type: "A" | "AAAA",
  signal: AbortSignal,
) => Promise<string[]>;

/** Bound on one round of lookups: a slow DNS server must not stall the sync loop. */
export const DNS_TIMEOUT_MS = 2_000;

/** The configured host's entries: comma-separated, trimmed, without empty ones. */
export function serverHostEntries(flag: string): string[] {
  return flag.split(",").map((h) => h.trim()).filter((h) => h !== "");
}

/** Strips `[` `]` around an IPv6 literal. */
function unbracket(host: string): string {
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

/** `localhost` and its subdomains: the system resolver's, never asked of DNS. */
function isLocalhost(host: string): boolean {
  const name = host.toLowerCase().replace(/\.$/, "");
  return name === "localhost" || name.endsWith(".localhost");
}

/** Resolves `name` to its A and AAAA records (either may fail; none: empty). */
async function lookUp(name: string, resolve: DnsResolver, log: Logger): Promise<string[]> {
  const signal = AbortSignal.timeout(DNS_TIMEOUT_MS);
  const results = await Promise.allSettled([
    resolve(name, "A", signal),
    resolve(name, "AAAA", signal),
  ]);
  const found: string[] = [];
  for (const result of results) {
    if (result.status === "fulfilled") found.push(...result.value);
    else log.debug("DNS lookup failed", { name, error: errorMessage(result.reason) });
  }
  return found;
}

/**
 * The addresses `flag` names. An IP literal stays as it is; a name with two or more records
 * becomes one address per record (verified as the name); a name with one record or none (an
 * `/etc/hosts` name, say, which DNS does not know) stays a name for the system resolver.
 * Duplicates are dropped; the order is the flag's, then the records'.
 */
export async function resolveServerAddresses(
  flag: string,
  resolve: DnsResolver = (name, type, signal) => Deno.resolveDns(name, type, { signal }),
  logger: Logger = nullLogger,
): Promise<ServerAddress[]> {
  const out: ServerAddress[] = [];
  const seen = new Set<string>();
  const add = (host: string, serverName: string) => {
    if (seen.has(host)) return;
    seen.add(host);
    out.push({ host, serverName });
  };
  for (const entry of serverHostEntries(flag)) {
    const host = unbracket(entry);
    if (isIP(host) !== 0 || isLocalhost(host)) {
      add(host, host);
      continue;
    }
    const records = await lookUp(host, resolve, logger);
    if (records.length < 2) add(host, host);
    else for (const address of records) add(address, host);
  }
  return out;
}

/**
 * Whether `flag` may name several addresses (a list, or a name that may resolve to several):
 * false only for a single IP literal or `localhost`, which need no resolving.
 */
export function mayNameSeveral(flag: string): boolean {
  const entries = serverHostEntries(flag);
  if (entries.length !== 1) return true;
  const host = unbracket(entries[0]!);
  return isIP(host) === 0 && !isLocalhost(host);
}

/**
 * The `addresses` option of a `ClientSet` for `--proxy-server-host=flag`: a resolver when the
 * flag may name several addresses, nothing (one address, upstream's behaviour) otherwise.
 */
export function serverAddressesOf(
  flag: string,
  logger: Logger = nullLogger,
): { addresses?: () => Promise<ServerAddress[]> } {
  if (!mayNameSeveral(flag)) return {};
  return { addresses: () => resolveServerAddresses(flag, undefined, logger) };
}
