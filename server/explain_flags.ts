/**
 * The dial explainer's flag (knp only): `--knp-explain-dials` is how many dials the server keeps
 * for the admin port's `/debug/dials` and status page; with its option field, validation and
 * configuration.
 *
 * @module
 */

import type { FlagSpec } from "@knp/cli/flags";
import { invalidFlag } from "@knp/cli/flags";
import { DEFAULT_EXPLAIN_DIALS } from "./dial_explainer.ts";
import type { AdminPagesConfig } from "./status.ts";

/** Largest `--knp-explain-dials` (a record is about 2 KiB). */
const MAX_EXPLAIN_DIALS = 100_000;

/** The explainer flags, spread into `SERVER_FLAGS`. */
export const EXPLAIN_FLAGS: readonly FlagSpec[] = [
  {
    name: "knp-explain-dials",
    type: "int",
    default: DEFAULT_EXPLAIN_DIALS,
    help: "knp only: how many of the latest dials the server keeps with their timeline (agent " +
      "chosen and why, DIAL_RSP, first bytes, bytes, close reason) for the admin port's " +
      "/debug/dials and /status; 0 keeps none.",
    implemented: true,
  },
];

/** Option fields of {@linkcode EXPLAIN_FLAGS}; `ServerOptions` extends it. */
export interface ExplainServerOptions {
  /** `--knp-explain-dials` (knp only). @default 1000 */
  knpExplainDials: number;
}

/**
 * Checks `--knp-explain-dials`: an integer from 0 to 100000.
 *
 * @throws {KnpError} `INVALID_FLAG` naming the flag.
 */
export function validateExplainOptions(o: ExplainServerOptions): void {
  const n = o.knpExplainDials;
  if (!Number.isInteger(n) || n < 0 || n > MAX_EXPLAIN_DIALS) {
    throw invalidFlag(`--knp-explain-dials: must be 0 to ${MAX_EXPLAIN_DIALS}, got ${n}`);
  }
}

/** The server's configuration from the option. */
export function explainConfig(o: ExplainServerOptions): AdminPagesConfig {
  return { explainDials: o.knpExplainDials };
}
