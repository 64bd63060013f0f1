/**
 * Results of the macro suite: one row per measured number, with its direct (physical limit)
 * counterpart, the ratio tunnel ÷ direct, and the issue's target where it has one.
 *
 * @module
 */

/**
 * A target on a row: on the ratio (tunnel ÷ direct), on the tunnel value itself, or on knp ÷
 * upstream (`upstream`: evaluated once upstream's run of the same row is known).
 */
export interface Target {
  on: "ratio" | "tunnel" | "upstream";
  op: ">=" | "<=";
  value: number;
  /** Why the target applies here (e.g. which link stands in for the fast link). */
  note?: string;
  /** Whether it is met (absent while it cannot be judged, e.g. no upstream run). */
  met?: boolean;
}

/** One measured number. */
export interface Row {
  /** Case family: download, upload, aggregate, echo, dial, idle, isolation, cpu, readyz. */
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
  /** The same measurement through upstream's server + agent in this run (its "tunnel"). */
  upstream?: number;
  /** tunnel ÷ upstream (null when upstream measured 0). */
  vsUpstream?: number | null;
  /** Upstream's run of this row: its direct column, ratio and details. */
  upstreamRun?: Record<string, unknown>;
  targets?: Target[];
  /** Every judged target met (absent when none could be judged). */
  met?: boolean;
  details?: Record<string, unknown>;
}

/** What a case gives to {@linkcode row}. */
export type RowInput = Omit<Row, "ratio" | "met" | "targets"> & {
  targets?: readonly (Target | undefined)[];
};

function judge(t: Target, r: Row): Target {
  const v = t.on === "ratio" ? r.ratio : t.on === "tunnel" ? r.tunnel : r.vsUpstream;
  if (v === undefined) return t;
  // knp ÷ upstream is null when upstream measured 0: knp is ahead on "higher" rows.
  const met = v === null ? r.better === "higher" : t.op === ">=" ? v >= t.value : v <= t.value;
  return { ...t, met };
}

function judged(r: Row): Row {
  const targets = r.targets?.map((t) => judge(t, r));
  const verdicts = (targets ?? []).filter((t) => t.met !== undefined).map((t) => t.met);
  const { met: _, ...rest } = r;
  return {
    ...rest,
    ...(targets?.length ? { targets } : {}),
    ...(verdicts.length ? { met: verdicts.every(Boolean) } : {}),
  };
}

/** Builds a row, computing the ratio and which targets are met. */
export function row(r: RowInput): Row {
  const { targets, ...rest } = r;
  const defined = (targets ?? []).filter((t): t is Target => t !== undefined);
  return judged({ ...rest, ratio: r.tunnel / r.direct, targets: defined });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * Rows measured in several rounds (the latency cases) as one row each: the median of the rounds'
 * direct values and of their tunnel values, the ratio and targets judged on those, and every
 * round in `details.rounds`. Rows measured once pass unchanged; rows keep their first position.
 */
export function mergeRounds(rows: Row[]): Row[] {
  const groups = new Map<string, Row[]>();
  for (const r of rows) {
    const k = `${r.case}|${r.frontend}|${r.link}|${r.title}`;
    const group = groups.get(k);
    if (group) group.push(r);
    else groups.set(k, [r]);
  }
  return [...groups.values()].map((group) => {
    if (group.length === 1) return group[0]!;
    const { ratio: _r, met: _m, targets, details: _d, ...first } = group[0]!;
    return row({
      ...first,
      direct: median(group.map((r) => r.direct)),
      tunnel: median(group.map((r) => r.tunnel)),
      targets: (targets ?? []).map(({ met: _, ...t }) => t),
      details: {
        rounds: group.map((r) => ({ direct: r.direct, tunnel: r.tunnel, details: r.details })),
      },
    });
  });
}

/** Adds upstream's run of the same measurement to a knp row and judges its upstream targets. */
export function withUpstream(r: Row, up: Row): Row {
  const vsUpstream = up.tunnel === 0 ? null : r.tunnel / up.tunnel;
  return judged({
    ...r,
    upstream: up.tunnel,
    vsUpstream,
    upstreamRun: { direct: up.direct, ratio: up.ratio, details: up.details },
  });
}

/**
 * knp's rows with upstream's run of the same case, frontend and title joined in (upstream's column
 * and knp ÷ upstream on every knp link's row; the targets on the default link's). Upstream rows
 * with no knp counterpart are kept as rows of their own.
 */
export function mergeUpstream(rows: Row[], upstreamRows: Row[]): Row[] {
  const key = (r: Row) => `${r.case}|${r.frontend}|${r.title}`;
  const byKey = new Map(upstreamRows.map((u) => [key(u), u]));
  const used = new Set<string>();
  const merged = rows.map((r) => {
    const up = byKey.get(key(r));
    if (!up) return r;
    used.add(key(r));
    return withUpstream(r, up);
  });
  return [...merged, ...upstreamRows.filter((u) => !used.has(key(u)))];
}

function fmt(x: number, unit: string): string {
  if (!Number.isFinite(x)) return String(x);
  if (unit === "B/conn" || unit === "µs" || unit === "dials/s") {
    return Math.round(x).toLocaleString("en-US");
  }
  if (Math.abs(x) >= 100) return x.toFixed(0);
  if (Math.abs(x) >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

function targetText(t: Target, unit: string): string {
  const v = t.on === "tunnel" ? `${fmt(t.value, unit)} ${unit}` : `${t.value}×`;
  const on = t.on === "upstream" ? "knp/up" : t.on;
  return `${on} ${t.op === ">=" ? "≥" : "≤"} ${v}`;
}

function metText(t: Target): string {
  return t.met === undefined ? "n/a" : t.met ? "yes" : "NO";
}

const ratioText = (x: number | null | undefined): string =>
  x === undefined ? "" : x === null ? "inf" : Number.isFinite(x) ? x.toFixed(3) : String(x);

/**
 * A plain-text table (case, frontend, link, unit, direct, tunnel, ratio, upstream, knp/upstream,
 * targets, met? per target) and its
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
    "upstream",
    "knp/up",
    "targets",
    "met?",
  ];
  const lines = rows.map((r) => [
    r.title + (r.directIs ? ` ${mark(`direct = ${r.directIs}; tunnel = ${r.tunnelIs}`)}` : ""),
    r.frontend,
    r.link,
    r.unit,
    fmt(r.direct, r.unit),
    fmt(r.tunnel, r.unit),
    ratioText(r.ratio),
    r.upstream === undefined ? "" : fmt(r.upstream, r.unit),
    ratioText(r.vsUpstream),
    (r.targets ?? []).map((t) => targetText(t, r.unit) + (t.note ? ` ${mark(t.note)}` : ""))
      .join("; "),
    (r.targets ?? []).map(metText).join("; "),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const numeric = new Set([4, 5, 6, 7, 8]);
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
