/**
 * What the benchmark processes share: the tiny request protocol of the bench backends, summary
 * statistics, `/proc` readers, and the line-delimited JSON used to drive child processes.
 *
 * Backend protocol (raw TCP, loopback only):
 * - **source**: the client sends an 8-byte big-endian length N; the backend sends N bytes, then
 *   waits for the next request. {@linkcode ENDLESS} means "until the connection ends".
 * - **sink**: the client sends an 8-byte length N, then N bytes; the backend answers one
 *   {@linkcode ACK} byte once it has read them all.
 * - **echo**: every byte is written back.
 * - **banner**: one {@linkcode BANNER} byte is sent on accept, then every byte is echoed (the "first
 *   byte" of a dial).
 * - **hold**: reads and discards with a 64-byte buffer (idle connections: the cheapest holder).
 *
 * @module
 */

import { readProcFile } from "../testing/proc_files.ts";

/** Length of a source/sink request header. */
export const HEADER_BYTES = 8;
/** A source request that never ends (2^53 − 1 bytes). */
export const ENDLESS = Number.MAX_SAFE_INTEGER;
/** The sink's acknowledgement. */
export const ACK = 0x4b;
/** The banner backend's first byte. */
export const BANNER = 0x42;
/** Bytes per write of the bench's own senders. */
export const CHUNK = 256 * 1024;

/** Ports of the bench backends (all on 127.0.0.1). */
export interface BackendPorts {
  source: number;
  sink: number;
  echo: number;
  banner: number;
  hold: number;
}

/** Encodes a request length. */
export function encodeLength(n: number): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  return out;
}

/** Decodes a request length from the first 8 bytes of `bytes`. */
export function decodeLength(bytes: Uint8Array): number {
  return Number(new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES).getBigUint64(0));
}

/** Nearest-rank percentile of an ascending array (`p` in 0–100). */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/** Latency summary in microseconds. */
export interface LatencySummary {
  samples: number;
  p50: number;
  p99: number;
  mean: number;
  max: number;
}

/** Summarises samples given in milliseconds as microseconds. */
export function summarize(samplesMs: number[]): LatencySummary {
  const us = samplesMs.map((ms) => ms * 1000).sort((a, b) => a - b);
  const sum = us.reduce((a, b) => a + b, 0);
  return {
    samples: us.length,
    p50: round(percentile(us, 50)),
    p99: round(percentile(us, 99)),
    mean: round(us.length ? sum / us.length : NaN),
    max: round(us.at(-1) ?? NaN),
  };
}

/** Rounds to `digits` decimals (one is enough for a report). */
export function round(x: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Resident set size of a process in bytes (`VmRSS` of /proc/<pid>/status). */
export function rssBytes(pid: number): number {
  const status = readProcFile(`/proc/${pid}/status`);
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** CPU time (user + system) a process has used, in seconds (/proc/<pid>/stat). */
export function cpuSeconds(pid: number): number {
  const stat = readProcFile(`/proc/${pid}/stat`);
  // Fields after the command name (which may contain spaces) start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return (utime + stime) / 100; // USER_HZ is 100 on Linux
}

/** The soft limit on open files of this process (/proc/self/limits). */
export function openFilesLimit(): number {
  const limits = readProcFile("/proc/self/limits");
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(limits);
  return !m || m[1] === "unlimited" ? Infinity : Number(m[1]);
}

const encoder = new TextEncoder();

/** Reads newline-delimited JSON values from a byte stream. */
export async function* jsonLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<unknown> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of stream) {
    pending += decoder.decode(chunk, { stream: true });
    let nl;
    while ((nl = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, nl).trim();
      pending = pending.slice(nl + 1);
      if (line !== "") yield JSON.parse(line);
    }
  }
}

/** Writes one JSON value as a line to a writer (stdout of a child, stdin of a parent). */
export async function writeJsonLine(
  writer: WritableStreamDefaultWriter<Uint8Array>,
  value: unknown,
): Promise<void> {
  await writer.write(encoder.encode(JSON.stringify(value) + "\n"));
}
