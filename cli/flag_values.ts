/**
 * Value syntax of pflag-style flags: Go's `strconv.ParseBool`/`ParseInt`/`ParseFloat` rules, Go
 * durations and pflag's CSV string slices.
 *
 * @module
 */

import { parseGoDuration } from "./duration.ts";
import type { FlagType, FlagValue } from "./flags.ts";

const TRUE_WORDS = new Set(["1", "t", "T", "true", "TRUE", "True"]);
const FALSE_WORDS = new Set(["0", "f", "F", "false", "FALSE", "False"]);

/** Parses a boolean the way Go's `strconv.ParseBool` does. */
export function parseGoBool(text: string): boolean {
  if (TRUE_WORDS.has(text)) return true;
  if (FALSE_WORDS.has(text)) return false;
  throw new SyntaxError(`Cannot parse "${text}" as a boolean: use true or false`);
}

const DIGITS: Record<number, RegExp> = {
  2: /^[01]+(_[01]+)*$/,
  8: /^[0-7]+(_[0-7]+)*$/,
  10: /^[0-9]+(_[0-9]+)*$/,
  16: /^[0-9a-fA-F]+(_[0-9a-fA-F]+)*$/,
};

/**
 * Parses an integer the way Go's `strconv.ParseInt(text, 0, 64)` does (base from the prefix,
 * `_` separators between digits), limited to JavaScript's safe integer range.
 */
export function parseGoInt(text: string): number {
  let body = text;
  let sign = 1n;
  if (body.startsWith("+") || body.startsWith("-")) {
    sign = body[0] === "-" ? -1n : 1n;
    body = body.slice(1);
  }
  let base = 10;
  let prefix = "";
  const lower = body.slice(0, 2).toLowerCase();
  if (lower === "0x" || lower === "0o" || lower === "0b") {
    base = lower === "0x" ? 16 : lower === "0o" ? 8 : 2;
    prefix = body.slice(0, 2);
  } else if (body.length > 1 && body[0] === "0") {
    base = 8;
    prefix = "0";
  }
  let digits = body.slice(prefix.length);
  // With a base prefix, one separator may follow the prefix directly (`0x_1f`).
  if (prefix !== "" && digits.startsWith("_")) digits = digits.slice(1);
  if (!DIGITS[base]!.test(digits)) {
    throw new SyntaxError(`Cannot parse "${text}" as an integer`);
  }
  const radix = base === 16 ? "0x" : base === 8 ? "0o" : base === 2 ? "0b" : "";
  const value = sign * BigInt(radix + digits.replaceAll("_", ""));
  if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
    throw new RangeError(`Integer "${text}" is out of range`);
  }
  return Number(value);
}

const FLOAT_SYNTAX = /^[+-]?(\d+(_\d+)*(\.(\d+(_\d+)*)?)?|\.\d+(_\d+)*)([eE][+-]?\d+)?$/;

/** Parses a decimal floating-point number (Go `strconv.ParseFloat` decimal syntax, plus inf/nan). */
export function parseGoFloat(text: string): number {
  const lower = text.toLowerCase().replace(/^\+/, "");
  if (lower === "inf" || lower === "infinity") return Infinity;
  if (lower === "-inf" || lower === "-infinity") return -Infinity;
  if (lower === "nan") return NaN;
  if (!FLOAT_SYNTAX.test(text)) throw new SyntaxError(`Cannot parse "${text}" as a number`);
  return Number(text.replaceAll("_", ""));
}

/** Splits one CSV record (`a,"b,c",d`) the way pflag's string slices do. */
export function splitCsvRecord(text: string): string[] {
  if (text === "") return [];
  const fields: string[] = [];
  let i = 0;
  while (true) {
    let field = "";
    if (text[i] === '"') {
      i++;
      while (true) {
        if (i >= text.length) throw new SyntaxError(`Unterminated quote in "${text}"`);
        if (text[i] === '"') {
          if (text[i + 1] === '"') {
            field += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        field += text[i];
        i++;
      }
      if (i < text.length && text[i] !== ",") {
        throw new SyntaxError(`Unexpected text after a quoted field in "${text}"`);
      }
    } else {
      const end = text.indexOf(",", i);
      field = end === -1 ? text.slice(i) : text.slice(i, end);
      if (field.includes('"')) throw new SyntaxError(`Bare quote in a field of "${text}"`);
      i = end === -1 ? text.length : end;
    }
    fields.push(field);
    if (i >= text.length) return fields;
    i++; // the comma
  }
}

/** Parses a string-slice value: `""` and `[]` are empty, `[a,b]` is unwrapped, CSV otherwise. */
export function parseStringSlice(text: string): string[] {
  const inner = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  return splitCsvRecord(inner);
}

/** Converts text to a value of the given type; throws `SyntaxError`/`RangeError` with the reason. */
export function parseFlagValue(type: FlagType, text: string): FlagValue {
  switch (type) {
    case "string":
      return text;
    case "bool":
      return parseGoBool(text);
    case "int":
      return parseGoInt(text);
    case "float":
      return parseGoFloat(text);
    case "duration":
      return parseGoDuration(text);
    case "stringSlice":
      return parseStringSlice(text);
  }
}
