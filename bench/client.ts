/**
 * The measuring client, run as its own process (`deno run` with `CLIENT_PERMISSIONS` of children.ts) so that the bench
 * driver's event loop (backends, process logs) never shares a thread with the measurement.
 *
 * It reads one JSON command per line on stdin and answers one JSON line on stdout:
 * `{"id":1,"op":"download","target":{…},"bytes":1073741824}` →
 * `{"id":1,"ok":true,"result":{…}}` or `{"id":1,"ok":false,"error":"…"}`. Commands run one at a
 * time. It exits when stdin ends.
 *
 * @module
 */

import {
  type BenchConn,
  connectDataBeforeAnswer,
  open,
  openMany,
  readCount,
  type Target,
} from "./conns.ts";
import {
  ACK,
  CHUNK,
  encodeLength,
  ENDLESS,
  jsonLines,
  type LatencySummary,
  summarize,
  writeJsonLine,
} from "./wire.ts";

const PAYLOAD = new Uint8Array(CHUNK).fill(0x5a);
const ECHO_SIZE = 32;
const ONE = new Uint8Array([0x31]);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();

/** Result of a transfer. */
export interface TransferResult {
  bytes: number;
  seconds: number;
}

/** Downloads `bytes` from the source backend (timed from the request to the last byte). */
async function download(conn: BenchConn, bytes: number): Promise<TransferResult> {
  const t0 = now();
  await conn.write(encodeLength(bytes));
  if (!(await readCount(conn, bytes))) throw new Error("connection ended during download");
  return { bytes, seconds: (now() - t0) / 1000 };
}

/** Uploads `bytes` to the sink backend (timed from the first byte to its acknowledgement). */
async function upload(conn: BenchConn, bytes: number): Promise<TransferResult> {
  const t0 = now();
  await conn.write(encodeLength(bytes));
  for (let left = bytes; left > 0; left -= CHUNK) {
    await conn.write(left >= CHUNK ? PAYLOAD : PAYLOAD.subarray(0, left));
  }
  const ack = await conn.read();
  if (ack === null || ack[0] !== ACK) throw new Error("sink did not acknowledge the upload");
  return { bytes, seconds: (now() - t0) / 1000 };
}

async function echoOnce(conn: BenchConn, payload: Uint8Array): Promise<number> {
  const t0 = now();
  await conn.write(payload);
  if (!(await readCount(conn, payload.byteLength))) throw new Error("echo connection ended");
  return now() - t0;
}

/** Commands of the client. */
export type Command =
  | { op: "transfer"; target: Target; direction: "download" | "upload"; bytes: number }
  | {
    op: "aggregate";
    target: Target;
    direction: "download" | "upload";
    conns: number;
    bytesEach: number;
  }
  | { op: "echo"; target: Target; iterations: number; warmup: number }
  | {
    op: "dial";
    target: Target;
    count: number;
    concurrency: number;
    /** Send one byte first and wait for its echo (an echo backend) instead of a banner. */
    send?: boolean;
  }
  | {
    op: "loadedEcho";
    echoTarget: Target;
    loadTarget: Target;
    loaders: number;
    warmupMs: number;
    windowMs: number;
  }
  | { op: "idleOpen"; target: Target; count: number; concurrency: number }
  | { op: "idleClose" }
  | {
    op: "isolation";
    /** Source backend (throughput) or echo backend (latency) of the healthy connections. */
    healthyTarget: Target;
    /** Source backend of the stalled connection. */
    stallTarget: Target;
    mode: "throughput" | "echo";
    healthy: number;
    stalled: boolean;
    warmupMs: number;
    windowMs: number;
    /** How long the stalled connection is read afterwards, to see whether it was ended. */
    drainMs: number;
  };

let idle: BenchConn[] = [];

async function aggregate(cmd: Command & { op: "aggregate" }) {
  const { conns, error } = await openMany(cmd.target, cmd.conns, 10);
  try {
    if (error) throw new Error(`opened ${conns.length} of ${cmd.conns}: ${error}`);
    const t0 = now();
    await Promise.all(
      conns.map((c) =>
        cmd.direction === "download" ? download(c, cmd.bytesEach) : upload(c, cmd.bytesEach)
      ),
    );
    return { bytes: cmd.bytesEach * conns.length, seconds: (now() - t0) / 1000 };
  } finally {
    for (const c of conns) c.close();
  }
}

/**
 * One dial: connect (and, through a proxy, the CONNECT or DIAL_REQ exchange) until the banner
 * backend's first byte arrives. Closes are not awaited.
 */
async function dial(cmd: Command & { op: "dial" }) {
  const samples: number[] = [];
  let next = 0;
  const early = connectDataBeforeAnswer();
  const worker = async () => {
    while (next < cmd.count) {
      next++;
      const t0 = now();
      const conn = await open(cmd.target);
      if (cmd.send) await conn.write(ONE);
      const first = await conn.read();
      samples.push(now() - t0);
      conn.close();
      if (first === null) throw new Error("dialed connection ended before its first byte");
    }
  };
  const t0 = now();
  await Promise.all(Array.from({ length: cmd.concurrency }, worker));
  const seconds = (now() - t0) / 1000;
  const dataBeforeAnswer = connectDataBeforeAnswer() - early;
  return { ...summarize(samples), perSecond: cmd.count / seconds, seconds, dataBeforeAnswer };
}

async function run(cmd: Command): Promise<unknown> {
  switch (cmd.op) {
    case "transfer": {
      const conn = await open(cmd.target);
      try {
        return cmd.direction === "download"
          ? await download(conn, cmd.bytes)
          : await upload(conn, cmd.bytes);
      } finally {
        conn.close();
      }
    }
    case "aggregate":
      return await aggregate(cmd);
    case "echo": {
      const conn = await open(cmd.target);
      try {
        const payload = new Uint8Array(ECHO_SIZE).fill(0x65);
        for (let i = 0; i < cmd.warmup; i++) await echoOnce(conn, payload);
        const samples: number[] = [];
        for (let i = 0; i < cmd.iterations; i++) samples.push(await echoOnce(conn, payload));
        return summarize(samples);
      } finally {
        conn.close();
      }
    }
    case "dial":
      return await dial(cmd);
    case "loadedEcho":
      return await loadedEcho(cmd);
    case "idleOpen": {
      const t0 = now();
      const { conns, error } = await openMany(cmd.target, cmd.count, cmd.concurrency);
      idle.push(...conns);
      return { opened: conns.length, error, seconds: (now() - t0) / 1000 };
    }
    case "idleClose": {
      const closed = idle.length;
      for (const c of idle) c.close();
      idle = [];
      return { closed };
    }
    case "isolation":
      return await isolation(cmd);
  }
}

/**
 * Echo round trips on one connection while `loaders` others download endlessly: after a warm-up,
 * the round trips started within the window.
 */
async function loadedEcho(
  cmd: Command & { op: "loadedEcho" },
): Promise<LatencySummary & { loadMBps: number }> {
  const echo = await open(cmd.echoTarget);
  const { conns, error } = await openMany(cmd.loadTarget, cmd.loaders, 10);
  let stop = false;
  let loaded = 0;
  try {
    if (error) throw new Error(`opened ${conns.length} of ${cmd.loaders}: ${error}`);
    const loads = conns.map(async (conn) => {
      await conn.write(encodeLength(ENDLESS));
      for (let chunk; !stop && (chunk = await conn.read()) !== null;) loaded += chunk.byteLength;
    }).map((p) => p.catch(() => {}));
    await sleep(cmd.warmupMs);
    const payload = new Uint8Array(ECHO_SIZE).fill(0x65);
    const samples: number[] = [];
    const [from, t0] = [loaded, now()];
    const end = t0 + cmd.windowMs;
    while (now() < end) samples.push(await echoOnce(echo, payload));
    const loadMBps = (loaded - from) / ((now() - t0) / 1000) / 1e6;
    stop = true;
    for (const c of conns) c.close();
    await Promise.race([Promise.all(loads), sleep(2_000)]);
    return { ...summarize(samples), loadMBps };
  } finally {
    stop = true;
    echo.close();
    for (const c of conns) c.close();
  }
}

/** Result of an isolation window. */
export interface IsolationResult {
  healthy: number;
  windowSeconds: number;
  /** Throughput mode: MB/s of all healthy connections together within the window. */
  mbPerSecond?: number;
  /** Echo mode: round trips started within the window. */
  latency?: LatencySummary;
  /** With a stalled connection: did the proxy end it (reset or close) within the drain? */
  stalledEnded?: boolean;
  /** Bytes the stalled connection received when drained after the window. */
  stalledBytes?: number;
}

/**
 * Healthy connections run for a warm-up, then for a window during which one more connection (the
 * stalled one) asks for an endless download and never reads. The window starts with the stall.
 */
async function isolation(cmd: Command & { op: "isolation" }): Promise<IsolationResult> {
  const { conns: healthy, error } = await openMany(cmd.healthyTarget, cmd.healthy, 10);
  const stalled = cmd.stalled ? await open(cmd.stallTarget).catch(() => undefined) : undefined;
  try {
    if (error) throw new Error(`opened ${healthy.length} of ${cmd.healthy}: ${error}`);
    if (cmd.stalled && !stalled) throw new Error("could not open the stalled connection");
    let start = Infinity;
    let end = Infinity;
    let stop = false;
    let bytes = 0;
    const samples: number[] = [];
    const payload = new Uint8Array(ECHO_SIZE).fill(0x65);
    const loops = healthy.map(async (conn) => {
      try {
        if (cmd.mode === "throughput") {
          await conn.write(encodeLength(ENDLESS));
          while (!stop) {
            const chunk = await conn.read();
            if (chunk === null) throw new Error("healthy connection ended");
            const t = now();
            if (t >= start && t < end) bytes += chunk.byteLength;
          }
        } else {
          while (!stop) {
            const t0 = now();
            const rtt = await echoOnce(conn, payload);
            if (t0 >= start && t0 < end) samples.push(rtt);
          }
        }
      } catch (err) {
        if (!stop) throw err;
      }
    });
    const failed = Promise.all(loops).then(() => {}, (err) => err as Error);
    await sleep(cmd.warmupMs);
    start = now();
    end = start + cmd.windowMs;
    if (stalled) await stalled.write(encodeLength(ENDLESS)); // and never read it
    const outcome = await Promise.race([sleep(cmd.windowMs).then(() => undefined), failed]);
    if (outcome instanceof Error) throw outcome;
    stop = true;
    const windowSeconds = (end - start) / 1000;
    for (const c of healthy) c.close();
    await Promise.race([failed, sleep(2_000)]);
    const result: IsolationResult = { healthy: healthy.length, windowSeconds };
    if (cmd.mode === "throughput") result.mbPerSecond = bytes / 1e6 / windowSeconds;
    else result.latency = summarize(samples);
    if (stalled) Object.assign(result, await drainStalled(stalled, cmd.drainMs));
    return result;
  } finally {
    for (const c of healthy) c.close();
    stalled?.close();
  }
}

/** Reads the stalled connection for up to `ms`: ended (by the proxy) or still streaming? */
async function drainStalled(
  conn: BenchConn,
  ms: number,
): Promise<{ stalledEnded: boolean; stalledBytes: number }> {
  const deadline = now() + ms;
  let stalledBytes = 0;
  while (now() < deadline) {
    const chunk = await Promise.race([
      conn.read().catch(() => null),
      sleep(Math.max(0, deadline - now())).then(() => "timeout" as const),
    ]);
    if (chunk === "timeout") break;
    if (chunk === null) return { stalledEnded: true, stalledBytes };
    stalledBytes += chunk.byteLength;
  }
  return { stalledEnded: false, stalledBytes };
}

if (import.meta.main) {
  const out = Deno.stdout.writable.getWriter();
  for await (const line of jsonLines(Deno.stdin.readable)) {
    const { id, ...cmd } = line as Command & { id: number };
    try {
      const result = await run(cmd as Command);
      await writeJsonLine(out, { id, ok: true, result });
    } catch (err) {
      const error = err instanceof Error ? err.stack ?? err.message : String(err);
      await writeJsonLine(out, { id, ok: false, error });
    }
  }
  // Give closing tunnels a moment, then leave.
  idle.forEach((c) => c.close());
  Deno.exit(0);
}
