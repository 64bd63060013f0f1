/**
 * Results of the macro suite: one row per measured number, with its direct (physical limit)
 * counterpart, the ratio tunnel ÷ direct, and the issue's target where it has one.
 *
 * @module
 */

/** A target on a row: on the ratio (tunnel ÷ direct) or on the tunnel value itself. */
export interface Target {
  on: "ratio" | "tunnel";
  op: ">=" | "<=";
  value: number;
  /** Why the target applies here (e.g. which link stands in for the fast link). */
  note?: string;
}

/** One measured number. */
export interface Row {
  /** Case family: download, upload, aggregate, echo, dial, idle, isolation. */
  case: string;
  /** What the row measures, e.g. "1 conn download". */
  title: string;
  frontend: string;
  link: string;
  unit: string;
  /** Which way is better. */
  better: "higher" | "lower";
  direct: number;
  tunnel: number;
  /** tunnel ÷ direct. */
  ratio: number;
  /** What the two columns are, when not "direct path" and "tunnel path" (isolation). */
  directIs?: string;
  tunnelIs?: string;
  target?: Target | undefined;
  met?: boolean;
  details?: Record<string, unknown>;
}

/** Builds a row, computing the ratio and whether the target is met. */
export function row(r: Omit<Row, "ratio" | "met">): Row {
  const ratio = r.tunnel / r.direct;
  let met: boolean | undefined;
  if (r.target) {
    const v = r.target.on === "ratio" ? ratio : r.tunnel;
    met = r.target.op === ">=" ? v >= r.target.value : v <= r.target.value;
  }
  return { ...r, ratio, ...(met === undefined ? {} : { met }) };
}

function fmt(x: number, unit: string): string {
  if (!Number.isFinite(x)) return String(x);
  if (unit === "B/conn" || unit === "µs") return Math.round(x).toLocaleString("en-US");
  if (Math.abs(x) >= 100) return x.toFixed(0);
  if (Math.abs(x) >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

function targetText(t: Target | undefined, unit: string): string {
  if (!t) return "";
  const v = t.on === "ratio" ? `${t.value}×` : `${fmt(t.value, unit)} ${unit}`;
  return `${t.on === "ratio" ? "ratio" : "tunnel"} ${t.op === ">=" ? "≥" : "≤"} ${v}`;
}

/**
 * A plain-text table (case, frontend, link, unit, direct, tunnel, ratio, target, met?) and its
 * footnotes: what the columns are when they are not the direct and tunnel paths, and target notes.
 */
export function table(rows: Row[]): string {
  const notes: string[] = [];
  const mark = (note: string) => {
    let i = notes.indexOf(note);
    if (i < 0) i = notes.push(note) - 1;
    return `[${i + 1}]`;
  };
  const header = [
    "case",
    "frontend",
    "link",
    "unit",
    "direct",
    "tunnel",
    "ratio",
    "target",
    "met?",
  ];
  const lines = rows.map((r) => [
    r.title + (r.directIs ? ` ${mark(`direct = ${r.directIs}; tunnel = ${r.tunnelIs}`)}` : ""),
    r.frontend,
    r.link,
    r.unit,
    fmt(r.direct, r.unit),
    fmt(r.tunnel, r.unit),
    Number.isFinite(r.ratio) ? r.ratio.toFixed(3) : String(r.ratio),
    targetText(r.target, r.unit) + (r.target?.note ? ` ${mark(r.target.note)}` : ""),
    r.met === undefined ? "" : r.met ? "yes" : "NO",
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const numeric = new Set([4, 5, 6]);
  const render = (cells: string[]) =>
    cells.map((c, i) => numeric.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))
      .join(" | ").trimEnd();
  return [
    render(header),
    widths.map((w) => "-".repeat(w)).join("-|-"),
    ...lines.map(render),
    ...(notes.length ? ["", ...notes.map((n, i) => `[${i + 1}] ${n}`)] : []),
  ].join("\n");
}
