/**
 * Go `time.Duration` text in and out, so flags such as `--keepalive-time=1h0m0s` or
 * `--sync-interval=100ms` mean exactly what they mean to the Go binaries.
 *
 * Internally the arithmetic is done in integer nanoseconds (`bigint`), like Go, and converted to
 * milliseconds (possibly fractional) at the boundary.
 *
 * @module
 */

const NS_PER_MS = 1_000_000n;
const MAX_NS = (1n << 63n) - 1n;

/** Nanoseconds per unit suffix. Both micro signs (U+00B5 and U+03BC) are accepted, as in Go. */
const UNIT_NS: ReadonlyMap<string, bigint> = new Map([
  ["ns", 1n],
  ["us", 1_000n],
  ["\u00b5s", 1_000n],
  ["\u03bcs", 1_000n],
  ["ms", 1_000_000n],
  ["s", 1_000_000_000n],
  ["m", 60_000_000_000n],
  ["h", 3_600_000_000_000n],
]);

function isDigit(ch: string | undefined): boolean {
  return ch !== undefined && ch >= "0" && ch <= "9";
}

/**
 * Parses a Go duration string into integer nanoseconds.
 *
 * @param text A duration such as `"1h0m0s"`, `"1.5s"`, `"300us"` or `"-1s"`.
 * @returns The duration in nanoseconds.
 * @throws {SyntaxError} If the text is not a valid Go duration or does not fit in an int64.
 */
export function parseGoDurationNs(text: string): bigint {
  let s = text;
  let negative = false;
  if (s.startsWith("-") || s.startsWith("+")) {
    negative = s[0] === "-";
    s = s.slice(1);
  }
  // A bare zero is the only unitless value Go accepts.
  if (s === "0") return 0n;
  if (s === "") throw new SyntaxError(`Invalid duration "${text}"`);

  let total = 0n;
  let i = 0;
  while (i < s.length) {
    const start = i;
    if (!(s[i] === "." || isDigit(s[i]))) throw new SyntaxError(`Invalid duration "${text}"`);
    while (isDigit(s[i])) i++;
    const whole = s.slice(start, i);
    let fraction = "";
    if (s[i] === ".") {
      i++;
      const fractionStart = i;
      while (isDigit(s[i])) i++;
      fraction = s.slice(fractionStart, i);
    }
    if (whole === "" && fraction === "") throw new SyntaxError(`Invalid duration "${text}"`);

    const unitStart = i;
    while (i < s.length && s[i] !== "." && !isDigit(s[i])) i++;
    const unit = s.slice(unitStart, i);
    if (unit === "") throw new SyntaxError(`Missing unit in duration "${text}"`);
    const unitNs = UNIT_NS.get(unit);
    if (unitNs === undefined) {
      throw new SyntaxError(`Unknown unit "${unit}" in duration "${text}"`);
    }

    // Fractions below one nanosecond are truncated, as Go does.
    let part = BigInt(whole === "" ? "0" : whole) * unitNs;
    if (fraction !== "") {
      part += (BigInt(fraction) * unitNs) / 10n ** BigInt(fraction.length);
    }
    total += part;
    if (total > MAX_NS + (negative ? 1n : 0n)) {
      throw new SyntaxError(`Invalid duration "${text}"`);
    }
  }
  return negative ? -total : total;
}

/**
 * Parses a Go duration string (`time.ParseDuration` syntax) into milliseconds.
 *
 * Accepted: an optional sign, then one or more `<number><unit>` parts where the number may have a
 * fraction and the unit is one of `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`. A bare `"0"` is accepted;
 * any other number without a unit is an error, as in Go.
 *
 * @example Parse flag values
 * ```ts
 * import assert from "node:assert/strict";
 * assert.equal(parseGoDuration("1h0m0s"), 3_600_000);
 * assert.equal(parseGoDuration("1.5s"), 1_500);
 * assert.equal(parseGoDuration("300us"), 0.3);
 * ```
 *
 * @param text The duration text.
 * @returns The duration in milliseconds; fractional below one millisecond.
 * @throws {SyntaxError} If the text is not a valid Go duration.
 */
export function parseGoDuration(text: string): number {
  return nsToMs(parseGoDurationNs(text));
}

/** Formats `value / 10^digits` with trailing zeros of the fraction removed. */
function formatScaled(value: bigint, digits: number): string {
  const scale = 10n ** BigInt(digits);
  const whole = value / scale;
  const fraction = (value % scale).toString().padStart(digits, "0").replace(/0+$/, "");
  return fraction === "" ? whole.toString() : `${whole}.${fraction}`;
}

/**
 * Formats integer nanoseconds the way Go's `time.Duration.String()` does.
 *
 * @param ns The duration in nanoseconds.
 * @returns Text such as `"1h0m0s"`, `"1.5s"`, `"100ms"`, `"300µs"` or `"0s"`.
 */
export function formatGoDurationNs(ns: bigint): string {
  if (ns === 0n) return "0s";
  const sign = ns < 0n ? "-" : "";
  const u = ns < 0n ? -ns : ns;
  if (u < 1_000n) return `${sign}${u}ns`;
  if (u < 1_000_000n) return `${sign}${formatScaled(u, 3)}\u00b5s`;
  if (u < 1_000_000_000n) return `${sign}${formatScaled(u, 6)}ms`;

  const totalSeconds = u / 1_000_000_000n;
  const secondsText = formatScaled(u % 60_000_000_000n, 9);
  const minutes = (totalSeconds / 60n) % 60n;
  const hours = totalSeconds / 3600n;
  if (hours > 0n) return `${sign}${hours}h${minutes}m${secondsText}s`;
  if (minutes > 0n) return `${sign}${minutes}m${secondsText}s`;
  return `${sign}${secondsText}s`;
}

/**
 * Formats milliseconds the way Go's `time.Duration.String()` does, so help text and logs show
 * durations in the same form users write them in flags.
 *
 * @example Format defaults for help text
 * ```ts
 * import assert from "node:assert/strict";
 * assert.equal(formatGoDuration(3_600_000), "1h0m0s");
 * assert.equal(formatGoDuration(100), "100ms");
 * assert.equal(formatGoDuration(0), "0s");
 * ```
 *
 * @param ms The duration in milliseconds; rounded to the nearest nanosecond.
 * @returns The Go form of the duration.
 * @throws {RangeError} If `ms` is not a finite number.
 */
export function formatGoDuration(ms: number): string {
  if (!Number.isFinite(ms)) throw new RangeError(`Cannot format duration ${ms}: not finite`);
  return formatGoDurationNs(BigInt(Math.round(ms * 1e6)));
}

/** Converts integer nanoseconds to milliseconds (fractional below one millisecond). */
function nsToMs(ns: bigint): number {
  const whole = ns / NS_PER_MS;
  return Number(whole) + Number(ns - whole * NS_PER_MS) / 1e6;
}
