/**
 * Server Leases (`coordination.k8s.io/v1`) as upstream's lease controller writes them and its
 * agents count them: the name `konnectivity-proxy-server-<serverID>`, labels, and validity —
 * `renewTime` (else `acquireTime`) plus `leaseDurationSeconds` is still ahead. Pure functions;
 * the server's controller and the agent's counter share them.
 *
 * @module
 */

/** Upstream's prefix of a server's Lease name. */
export const LEASE_NAME_PREFIX = "konnectivity-proxy-server-";

/** The Lease name of server `serverId`. */
export function leaseName(serverId: string): string {
  return `${LEASE_NAME_PREFIX}${serverId}`;
}

/** What knp reads of a Lease; times in ms since the epoch. */
export interface LeaseRecord {
  /** `metadata.name`. */
  name: string;
  /** `metadata.resourceVersion` (empty when absent). */
  resourceVersion: string;
  /** `metadata.labels`. */
  labels: Record<string, string>;
  /** `spec.holderIdentity`. */
  holderIdentity?: string | undefined;
  /** `spec.leaseDurationSeconds`. */
  durationSeconds?: number | undefined;
  /** `spec.renewTime`, ms since the epoch. */
  renewTime?: number | undefined;
  /** `spec.acquireTime`, ms since the epoch. */
  acquireTime?: number | undefined;
}

/** A time field of a Lease (a string from JSON, a `Date` from client-node) in ms, if any. */
function timeOf(value: unknown): number | undefined {
  if (value instanceof Date) return Number.isFinite(value.getTime()) ? value.getTime() : undefined;
  if (typeof value !== "string" || value === "") return undefined;
  const ms = Date.parse(value);
  return Number.isFinite(ms) ? ms : undefined;
}

/** Reads a Lease object (from a list, a watch event or a call); undefined if it has no name. */
export function leaseRecord(object: unknown): LeaseRecord | undefined {
  // deno-lint-ignore no-explicit-any -- an API object is untyped JSON
  const o = object as any;
  const name = o?.metadata?.name;
  if (typeof name !== "string") return undefined;
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(o.metadata.labels ?? {})) {
    if (typeof v === "string") labels[k] = v;
  }
  const duration = o.spec?.leaseDurationSeconds;
  return {
    name,
    resourceVersion: String(o.metadata.resourceVersion ?? ""),
    labels,
    holderIdentity: typeof o.spec?.holderIdentity === "string" ? o.spec.holderIdentity : undefined,
    durationSeconds: typeof duration === "number" ? duration : undefined,
    renewTime: timeOf(o.spec?.renewTime),
    acquireTime: timeOf(o.spec?.acquireTime),
  };
}

/**
 * When the Lease stops being valid (ms since the epoch): its `renewTime`, else `acquireTime`,
 * plus `leaseDurationSeconds`; undefined when it has neither time or no duration (invalid).
 */
export function leaseExpiresAt(lease: LeaseRecord): number | undefined {
  const base = lease.renewTime ?? lease.acquireTime;
  if (base === undefined || lease.durationSeconds === undefined) return undefined;
  return base + lease.durationSeconds * 1000;
}

/** Upstream's `IsLeaseValid`: the Lease expires after `now`. */
export function isLeaseValid(lease: LeaseRecord, now: number): boolean {
  const expires = leaseExpiresAt(lease);
  return expires !== undefined && expires > now;
}

/** Kubernetes' `MicroTime` text of `ms` (RFC 3339 with six fractional digits, UTC). */
export function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/Z$/, "000Z");
}

/** `labels.FormatLabels`: `k=v,k2=v2`, keys sorted; the selector of exactly these labels. */
export function formatLabels(labels: Record<string, string>): string {
  return Object.keys(labels).sort().map((k) => `${k}=${labels[k]}`).join(",");
}
