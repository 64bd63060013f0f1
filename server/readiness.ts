/**
 * The server's `/readyz`: ready when every configured routing class has an agent.
 *
 * A routing class is one configured proxy strategy (`--proxy-strategies`): `default` needs any
 * agent, `defaultRoute` an agent advertising `default-route=true`, `destHost` an agent advertising
 * a host or IP, `destCIDR` an agent advertising a CIDR. Each is a check line in kube's format
 * (`[+]strategy-default ok: 2 agents`, `[-]strategy-destHost failed: ...`); one failed line makes
 * the server not ready (500, upstream's status). This includes upstream's rule (the first
 * strategy has an agent) and adds the later ones: with `destHost,defaultRoute` a server whose only
 * agents advertise hosts cannot carry a dial to any other address, so it is not ready.
 *
 * Zones (`--knp-zone-cidrs`) are informational lines: a zone without an agent is reported
 * `[+]zone-NAME degraded: no agent in this zone ...` and does not make the server unready, because
 * a dial to that zone still goes to an agent elsewhere (the zone is a preference, not a route).
 *
 * ```ts
 * import { BackendManager } from "./backend_manager.ts";
 * const r = serverReadiness(new BackendManager(["default"]));
 * console.log(r.ready, r.lines); // false ["[-]strategy-default failed: no agent connected"]
 * ```
 *
 * @module
 */

import type { BackendManager, ProxyStrategy } from "./backend_manager.ts";
import type { ZoneMap } from "./routing.ts";

/** The readiness verdict and its check lines. */
export interface Readiness {
  /** Every routing class has an agent. */
  ready: boolean;
  /** kube-style lines, `[+]name ok: detail` / `[-]name failed: reason`, in strategy order. */
  lines: string[];
  /** Connected agent streams. */
  agents?: number;
}

/** What a strategy's storage holds, in words ("2 agents", "3 hosts"). */
const UNIT: Record<ProxyStrategy, [string, string]> = {
  default: ["agent", "no agent connected"],
  defaultRoute: ["agent", "no agent advertises default-route=true"],
  destHost: ["host", "no agent advertises a host or IP (agent identifiers host=, ipv4=, ipv6=)"],
  destCIDR: ["prefix", "no agent advertises a CIDR (agent identifier cidr=)"],
};

/** Judges `manager`'s strategies (and reports `zones`). Cheap: counts, no I/O. */
export function serverReadiness(manager: BackendManager, zones?: ZoneMap): Readiness {
  const lines: string[] = [];
  let ready = manager.storages.length > 0;
  for (const storage of manager.storages) {
    const [unit, missing] = UNIT[storage.strategy];
    const n = storage.size;
    if (n === 0) {
      ready = false;
      lines.push(`[-]strategy-${storage.strategy} failed: ${missing}`);
    } else {
      lines.push(`[+]strategy-${storage.strategy} ok: ${n} ${unit}${n === 1 ? "" : "s"}`);
    }
  }
  if (zones !== undefined) lines.push(...zoneLines(manager, zones));
  return { ready, lines, agents: manager.agents.size };
}

/** One line per zone of `--knp-zone-cidrs`: its agents, or that it has none. */
function zoneLines(manager: BackendManager, zones: ZoneMap): string[] {
  const names = [...new Set(zones.items.map((item) => item.slice(0, item.indexOf("="))))];
  const count = new Map<string, number>();
  for (const b of manager.agents) {
    const zone = b.identifiers.zone;
    if (zone !== undefined) count.set(zone, (count.get(zone) ?? 0) + 1);
  }
  return names.map((zone) => {
    const n = count.get(zone) ?? 0;
    return n > 0
      ? `[+]zone-${zone} ok: ${n} agent${n === 1 ? "" : "s"}`
      : `[+]zone-${zone} degraded: no agent in this zone; its dials go to agents elsewhere`;
  });
}
