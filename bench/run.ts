/**
 * What one bench run collects: knp's rows, upstream's rows (joined into knp's at the end) and the
 * cases that failed, with a progress line per row as it is added.
 *
 * @module
 */

import { UPSTREAM_LINK } from "./links.ts";
import { progress } from "./output.ts";
import type { Row } from "./report.ts";
import { round } from "./wire.ts";

/** A failed case (the run goes on; the exit code says it failed). */
export interface Failure {
  case: string;
  frontend: string;
  link: string;
  error: string;
}

/** What a run collects, and how its cases report into it. */
export class Run {
  readonly rows: Row[] = [];
  /** Upstream's rows, joined into knp's at the end. */
  readonly upstreamRows: Row[] = [];
  readonly errors: Failure[] = [];

  /** Runs `body`; a failure is recorded and reported, not thrown. */
  async attempt(what: Omit<Failure, "error">, body: () => Promise<void>): Promise<void> {
    try {
      await body();
    } catch (err) {
      const error = err instanceof Error ? err.message : String(err);
      progress(`FAILED ${what.case} (${what.frontend}, ${what.link}): ${error}`);
      this.errors.push({ ...what, error });
    }
  }

  readonly add = (r: Row): void => {
    (r.link === UPSTREAM_LINK ? this.upstreamRows : this.rows).push(r);
    progress(
      `${r.title} [${r.frontend}, ${r.link}]: direct ${round(r.direct, 1)} ${r.unit}, ` +
        `tunnel ${round(r.tunnel, 1)} ${r.unit}, ratio ${r.ratio.toFixed(3)}` +
        (r.met === undefined ? "" : r.met ? " (targets met)" : " (target NOT met)"),
    );
  };
}
