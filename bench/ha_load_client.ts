/**
 * The client of the `ha-load` case, run as its own process (`deno run -A bench/ha_load_client.ts
 * '<json>'`): opens `sessions` connections at once through the servers' HTTP-CONNECT frontends
 * (session i through server i mod n), then has every one download `bytes` from the source
 * backend, and checks each session's bytes with a SHA-256 (native, incremental) against the
 * digest of what the source sends. Prints one JSON line: sessions ok, the errors, and the times.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { readProcFile } from "../testing/proc_files.ts";
import { open } from "./conns.ts";
import { CHUNK, encodeLength } from "./wire.ts";

/** What the driver asks for. */
export interface HaLoadCommand {
  /** The servers' frontend sockets (HTTP-CONNECT mode). */
  udsPaths: string[];
  /** The source backend's port on 127.0.0.1. */
  port: number;
  sessions: number;
  /** Bytes each session downloads. */
  bytes: number;
  /** Straight to the backend instead (the physical limit). */
  direct?: boolean;
}

/** What the client prints. */
export interface HaLoadResult {
  ok: number;
  /** One line per failed session (the first 20), and their count. */
  errors: string[];
  failed: number;
  /** Seconds to open every session (each dial answered). */
  openSeconds: number;
  /** Seconds from the first request to the last session checked. */
  transferSeconds: number;
  /** This process's peak RSS (VmHWM), in bytes. */
  peakRss: number;
}

/** Peak resident set size (`VmHWM` of /proc/<pid>/status) in bytes; 0 when unknown. */
export function peakRss(pid: number | "self"): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB$/m.exec(readProcFile(`/proc/${pid}/status`));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** The source's bytes: its 256 KiB payload, repeated. */
const PAYLOAD = new Uint8Array(CHUNK).map((_, i) => (i * 7 + (i >>> 11)) & 255);

/** The SHA-256 (hex) of the first `n` bytes the source sends. */
function expectedHash(n: number): string {
  const h = createHash("sha256");
  for (let off = 0; off < n; off += CHUNK) h.update(PAYLOAD.subarray(0, Math.min(CHUNK, n - off)));
  return h.digest("hex");
}

async function session(
  conn: Awaited<ReturnType<typeof open>>,
  bytes: number,
  want: string,
): Promise<void> {
  try {
    await conn.write(encodeLength(bytes));
    let got = 0;
    const h = createHash("sha256");
    while (got < bytes) {
      const chunk = await conn.read();
      if (chunk === null) throw new Error(`ended after ${got} of ${bytes} bytes`);
      h.update(chunk);
      got += chunk.byteLength;
    }
    if (got !== bytes) throw new Error(`got ${got} bytes, wanted ${bytes}`);
    const digest = h.digest("hex");
    if (digest !== want) throw new Error(`SHA-256 mismatch: ${digest} != ${want}`);
  } finally {
    conn.close();
  }
}

/** Runs the sessions; never throws (failures are counted). */
export async function runHaLoad(cmd: HaLoadCommand): Promise<HaLoadResult> {
  const want = expectedHash(cmd.bytes);
  const errors: string[] = [];
  const fail = (i: number, err: unknown) => {
    if (errors.length < 20) {
      errors.push(`session ${i}: ${err instanceof Error ? err.message : err}`);
    }
  };
  let failed = 0;
  const t0 = performance.now();
  const conns = await Promise.all(Array.from({ length: cmd.sessions }, (_, i) => {
    const udsPath = cmd.udsPaths[i % cmd.udsPaths.length]!;
    const target = cmd.direct
      ? { via: "direct" as const, port: cmd.port }
      : { via: "http-connect" as const, udsPath, port: cmd.port };
    return open(target).catch((err) => {
      failed++;
      fail(i, err);
      return undefined;
    });
  }));
  const t1 = performance.now();
  let ok = 0;
  await Promise.all(conns.map(async (conn, i) => {
    if (!conn) return;
    try {
      await session(conn, cmd.bytes, want);
      ok++;
    } catch (err) {
      failed++;
      fail(i, err);
    }
  }));
  const t2 = performance.now();
  return {
    ok,
    errors,
    failed,
    openSeconds: (t1 - t0) / 1000,
    transferSeconds: (t2 - t1) / 1000,
    peakRss: peakRss("self"),
  };
}

if (import.meta.main) {
  const result = await runHaLoad(JSON.parse(Deno.args[0]!) as HaLoadCommand);
  await Deno.stdout.write(new TextEncoder().encode(JSON.stringify(result) + "\n"));
}
