/**
 * The bench driver's output: progress lines on stderr, the table and JSON document on stdout.
 *
 * @module
 */

const encoder = new TextEncoder();

function writeAll(to: { writeSync(p: Uint8Array): number }, text: string): void {
  let bytes = encoder.encode(text);
  while (bytes.byteLength > 0) bytes = bytes.subarray(to.writeSync(bytes));
}

/** One progress line on stderr. */
export const progress = (line: string): void => writeAll(Deno.stderr, `[bench] ${line}\n`);

/** Prints to stdout (the table and the JSON document). */
export const print = (text: string): void => writeAll(Deno.stdout, text + "\n");

/** Waits `ms`: the bench measures over time windows and samples RSS over time. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
