/**
 * A loopback TCP relay between an agent and the server's agent port (gRPC or WebSocket link), so
 * the chaos suite can fault the network path: {@linkcode Relay.cut} drops every connection (both
 * sides closed), {@linkcode Relay.blackhole} stops forwarding in both directions until
 * {@linkcode Relay.resume} (bytes wait in the kernel buffers, as a path that loses packets until
 * it heals; connections accepted meanwhile are held unconnected).
 *
 * @module
 */

/** A relay handle. */
export interface Relay extends AsyncDisposable {
  /** The port agents connect to. */
  readonly port: number;
  /** Connection pairs open now. */
  readonly open: number;
  /** Closes every relayed connection on both sides. */
  cut(): void;
  /** Stops forwarding (reads stop on both sides) until {@linkcode Relay.resume}. */
  blackhole(): void;
  /** Forwards again after {@linkcode Relay.blackhole}. */
  resume(): void;
}

function closeQuietly(conn: Deno.Conn | undefined): void {
  try {
    conn?.close();
  } catch { /* already closed */ }
}

/** A gate pumps pass while the relay forwards. */
class Gate {
  #open = Promise.withResolvers<void>();
  #isOpen = true;

  constructor() {
    this.#open.resolve();
  }

  get passed(): Promise<void> {
    return this.#open.promise;
  }

  close(): void {
    if (!this.#isOpen) return;
    this.#isOpen = false;
    this.#open = Promise.withResolvers<void>();
  }

  open(): void {
    this.#isOpen = true;
    this.#open.resolve();
  }
}

async function pump(from: Deno.Conn, to: Deno.Conn, gate: Gate): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  try {
    while (true) {
      await gate.passed;
      const n = await from.read(buf);
      if (n === null) break;
      let chunk = buf.subarray(0, n);
      while (chunk.length > 0) chunk = chunk.subarray(await to.write(chunk));
    }
  } catch { /* either side closed or reset */ }
}

/** Starts a relay on 127.0.0.1 forwarding to `127.0.0.1:targetPort`. */
export function startRelay(targetPort: number): Relay {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const gate = new Gate();
  const pairs = new Set<Deno.Conn[]>();
  const tasks = new Set<Promise<void>>();
  const serve = async (down: Deno.Conn) => {
    const pair: Deno.Conn[] = [down];
    pairs.add(pair);
    try {
      await gate.passed;
      if (!pairs.has(pair)) return;
      const up = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
      pair.push(up);
      if (!pairs.has(pair)) return closeQuietly(up);
      // Either direction ending ends the pair (a TCP proxy without half-close).
      await Promise.race([pump(down, up, gate), pump(up, down, gate)]);
    } catch { /* the server is down: the agent sees its connection close */ }
    pairs.delete(pair);
    for (const c of pair) closeQuietly(c);
  };
  const accepting = (async () => {
    for await (const conn of listener) {
      const task = serve(conn);
      tasks.add(task);
      task.finally(() => tasks.delete(task));
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    get open() {
      return pairs.size;
    },
    cut() {
      for (const pair of [...pairs]) {
        pairs.delete(pair);
        for (const c of pair) closeQuietly(c);
      }
    },
    blackhole: () => gate.close(),
    resume: () => gate.open(),
    async [Symbol.asyncDispose]() {
      listener.close();
      gate.open();
      this.cut();
      await accepting;
      await Promise.all([...tasks]);
    },
  };
}
