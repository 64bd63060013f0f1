/**
 * What a fuzz target is: a generator of inputs from a seeded {@linkcode Rng}, a check that runs
 * the code under test on one input and throws {@linkcode InvariantError} when an invariant breaks,
 * and a JSON form of its inputs for the saved regression files.
 *
 * @module
 */
import type { Rng } from "./rng.ts";

/** A fuzz target. `I` is its input type. */
export interface Target<I> {
  /** Short name; regression inputs live in `fuzz/regressions/<name>/`. */
  readonly name: string;
  /** One input, drawn from `rng`. */
  generate(rng: Rng): I;
  /** Runs the code under test; throws when an invariant breaks (any throw is a crash). */
  check(input: I): void;
  /** The input as JSON (bytes as hex). */
  toJson(input: I): unknown;
  /** The input back from {@linkcode Target.toJson}'s form. */
  fromJson(json: unknown): I;
}

/** Any target, for lists of targets. */
// deno-lint-ignore no-explicit-any
export type AnyTarget = Target<any>;

/** An invariant of the code under test did not hold. */
export class InvariantError extends Error {
  /** The broken invariant, described. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "InvariantError";
  }
}

/** Throws an {@linkcode InvariantError} unless `ok`. */
export function invariant(ok: boolean, message: string): asserts ok {
  if (!ok) throw new InvariantError(message);
}

/** Wraps an exception the code under test should not throw. */
export function unexpected(what: string, err: unknown): InvariantError {
  const text = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return new InvariantError(`${what} threw an unexpected ${text}`, { cause: err });
}

/** Bytes as lower-case hex. */
export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** Hex (as written by {@linkcode toHex}) back to bytes. */
export function fromHex(hex: unknown): Uint8Array {
  if (typeof hex !== "string" || !/^(?:[0-9a-f]{2})*$/i.test(hex)) {
    throw new TypeError("expected a hex string");
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** A target over plain byte inputs, stored as hex. */
export function byteTarget(
  name: string,
  generate: (rng: Rng) => Uint8Array,
  check: (input: Uint8Array) => void,
): Target<Uint8Array> {
  return { name, generate, check, toJson: toHex, fromJson: fromHex };
}
