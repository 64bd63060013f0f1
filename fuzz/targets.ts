/**
 * Every fuzz target, by name.
 *
 * @module
 */
import type { AnyTarget } from "./target.ts";
import { packetTarget } from "./targets/packet_target.ts";
import { connectTarget } from "./targets/connect_target.ts";
import { headerTarget } from "./targets/header_target.ts";
import { flagsTarget } from "./targets/flags_target.ts";
import { wsTarget } from "./targets/ws_target.ts";

/** The targets, in the order a run takes them. */
export const TARGETS: readonly AnyTarget[] = [
  packetTarget,
  connectTarget,
  headerTarget,
  flagsTarget,
  wsTarget,
];

/** The target called `name`. @throws {RangeError} for an unknown name */
export function targetNamed(name: string): AnyTarget {
  const target = TARGETS.find((t) => t.name === name);
  if (target === undefined) {
    throw new RangeError(`unknown target ${name}; known: ${TARGETS.map((t) => t.name).join(", ")}`);
  }
  return target;
}
