/**
 * Test-only helpers for knp: a throwaway PKI, fake clocks and in-memory packet pipes, and
 * flag-parser assertions. Not published.
 *
 * @module
 */

export * from "./certs.ts";
export * from "./fakes.ts";
export * from "./options.ts";
