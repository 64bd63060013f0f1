import assert from "node:assert/strict";
import {
  closeResponse,
  dataPacket,
  type DecodedPacket,
  dialResponse,
  type Packet,
} from "@knp/proto";
import type { ByteSocket } from "@knp/transport/byte_socket";
import { type DialErrorKind, HTTP_STATUS, tagDialError } from "@knp/core/dial_errors";
import {
  dialFailure,
  HttpConnectFrontend,
  type HttpConnectLimits,
  parseConnectHead,
  validConnectTarget,
} from "./http_connect_frontend.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const ESTABLISHED = "HTTP/1.1 200 Connection Established\r\n\r\n";

/** Lets queued microtasks and zero-delay timers run. */
const settle = async (rounds = 3) => {
  for (let i = 0; i < rounds; i++) await new Promise<void>((r) => setTimeout(r, 0));
};

/**
 * An in-memory client socket: the test pushes what the client sends and reads what the frontend
 * wrote. Writes accept at most `writeChunk` bytes per call (partial writes).
 */
class MemorySocket implements ByteSocket {
  #inbox: Uint8Array[] = [];
  #next = 0;
  #clientEnded = false;
  #wake: (() => void) | undefined;
  written: Uint8Array[] = [];
  closed = false;
  reads = 0;
  writeChunk: number;

  constructor(writeChunk = 1 << 20) {
    this.writeChunk = writeChunk;
  }

  /** Client → frontend bytes. */
  push(data: string | Uint8Array): void {
    this.#inbox.push(typeof data === "string" ? encoder.encode(data) : data);
    this.#notify();
  }

  /** The client closes its side. */
  end(): void {
    this.#clientEnded = true;
    this.#notify();
  }

  /** Everything the frontend wrote, as text. */
  get output(): string {
    return this.written.map((b) => decoder.decode(b)).join("");
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  async read(buffer: Uint8Array): Promise<number | null> {
    while (this.#next === this.#inbox.length) {
      if (this.#clientEnded || this.closed) return null;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
    this.reads++;
    const head = this.#inbox[this.#next]!;
    const n = Math.min(head.byteLength, buffer.byteLength);
    buffer.set(head.subarray(0, n));
    if (n === head.byteLength) this.#next++;
    else this.#inbox[this.#next] = head.subarray(n);
    return n;
  }

  write(data: Uint8Array): Promise<number> {
    if (this.closed) return Promise.reject(new Deno.errors.BadResource("closed"));
    const n = Math.min(data.byteLength, this.writeChunk);
    this.written.push(data.slice(0, n));
    return Promise.resolve(n);
  }

  close(): void {
    this.closed = true;
    this.#notify();
  }

  /** Set when the frontend reset the socket instead of closing it cleanly. */
  aborted = false;

  abort(): void {
    this.aborted = true;
    this.close();
  }
}

/** A frontend over a memory socket, with what its handler received. */
function frontend(limits: HttpConnectLimits = {}, writeChunk?: number) {
  const socket = new MemorySocket(writeChunk);
  const fe = new HttpConnectFrontend(socket, "memory", "srv-1", limits);
  const packets: DecodedPacket[] = [];
  const ends: (Error | undefined)[] = [];
  const start = () => fe.start({ onPacket: (p) => packets.push(p), onEnd: (e) => ends.push(e) });
  const data = () =>
    packets.filter((p): p is Extract<Packet, { type: "DATA" }> => p.type === "DATA");
  const dialId = () => {
    const req = packets.find((p) => p.type === "DIAL_REQ");
    assert.ok(req && req.type === "DIAL_REQ", "a DIAL_REQ was sent");
    return req.dialRequest.random;
  };
  return { socket, fe, packets, ends, start, data, dialId };
}

// ------------------------------------------------------------ pure functions

/** dialFailure's result with the fields the listener reads. */
function failure(text: string, serverId: string) {
  return dialFailure(text, serverId) as unknown as Error & {
    status: number;
    statusText: string;
    kind: string;
  };
}

Deno.test("validConnectTarget accepts host:port forms and rejects the rest", () => {
  for (const ok of ["127.0.0.1:80", "example.com:443", "[::1]:8080", "a:1", "node-1.local:65535"]) {
    assert.equal(validConnectTarget(ok), true, ok);
  }
  for (
    const bad of [
      "",
      "example.com",
      ":80",
      "host:0",
      "host:65536",
      "host:123456",
      "host:port",
      "host:",
      "a/b:80",
      "user@host:80",
      "[::1]",
      "::1:80",
      "http://host:80",
      "host:80/path",
      "ho st:80",
    ]
  ) {
    assert.equal(validConnectTarget(bad), false, bad);
  }
});

Deno.test("parseConnectHead returns target, user agent and the bytes after the head", () => {
  const rest = encoder.encode("pipelined");
  const req = parseConnectHead(
    "CONNECT 10.0.0.5:10250 HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: kube-apiserver",
    rest,
  );
  assert.equal(req.target, "10.0.0.5:10250");
  assert.equal(req.userAgent, "kube-apiserver");
  assert.equal(req.rest, rest);
  // The Host header is ignored for the target; header names are case-insensitive.
  assert.equal(
    parseConnectHead("CONNECT a.example:1 HTTP/1.1\r\nhOsT: b.example:2", new Uint8Array())
      .target,
    "a.example:1",
  );
  // HTTP/1.0 needs no Host.
  assert.equal(parseConnectHead("CONNECT h:9 HTTP/1.0", new Uint8Array()).target, "h:9");
});

Deno.test("parseConnectHead rejects bad requests with their statuses", () => {
  const cases: [string, number, RegExp][] = [
    ["GET / HTTP/1.1\r\nHost: x", 405, /^this proxy only supports CONNECT passthrough$/],
    ["POST /x HTTP/1.1\r\nHost: x", 405, /CONNECT passthrough/],
    ["CONNECT 127.0.0.1:80 HTTP/1.1", 400, /Host/],
    ["CONNECT 127.0.0.1:80 HTTP/1.1\r\nUser-Agent: x", 400, /Host/],
    ["CONNECT example.com HTTP/1.1\r\nHost: x", 400, /invalid CONNECT target/],
    ["CONNECT /path HTTP/1.1\r\nHost: x", 400, /invalid CONNECT target/],
    ["CONNECT 127.0.0.1:80\r\nHost: x", 400, /malformed HTTP request line/],
    ["CONNECT 127.0.0.1:80 HTTP/2.0\r\nHost: x", 400, /malformed HTTP request line/],
    ["CONNECT  127.0.0.1:80 HTTP/1.1\r\nHost: x", 400, /malformed HTTP request line/],
    ["", 400, /malformed HTTP request line/],
    ["CONNECT 127.0.0.1:80 HTTP/1.1\r\nno colon here", 400, /malformed HTTP header/],
    ["CONNECT 127.0.0.1:80 HTTP/1.1\r\n: empty name", 400, /malformed HTTP header/],
  ];
  for (const [head, status, message] of cases) {
    assert.throws(
      () => parseConnectHead(head, new Uint8Array()),
      (err: unknown) => {
        const e = err as { status?: number; message?: string };
        assert.equal(e.status, status, JSON.stringify(head));
        assert.match(e.message ?? "", message, JSON.stringify(head));
        return true;
      },
    );
  }
});

Deno.test("dialFailure: status per kind, reason first, then kind, server and agent", () => {
  const expected: Record<DialErrorKind, number> = {
    "no-agent": 500,
    "no-route": 500,
    "dial-refused": 502,
    "dial-timeout": 504,
    "dns-failure": 502,
    "server-overloaded": 503,
    "policy-denied": 403,
    "agent-draining": 503,
    "tunnel-closed": 502,
    "unknown": 502,
  };
  for (const kind of Object.keys(expected) as DialErrorKind[]) {
    const text = tagDialError(`something went wrong (${kind})`, {
      kind,
      serverId: "srv-tagged",
      agentId: "agent-7",
    });
    const err = failure(text, "srv-local");
    assert.equal(err.status, expected[kind], kind);
    assert.equal(err.statusText, HTTP_STATUS[kind][1], kind);
    assert.equal(err.kind, kind);
    const lines = err.message.split("\n");
    const reason = `something went wrong (${kind})`;
    assert.equal(
      lines[0],
      kind === "no-agent" ? `currently no tunnels available: ${reason}` : reason,
      kind,
    );
    assert.equal(lines[1], `kind: ${kind}`);
    assert.equal(lines[2], "server: srv-tagged", "the tag's server wins");
    assert.equal(lines[3], "agent: agent-7");
  }
});

Deno.test("dialFailure: untagged upstream texts are classified; the local server ID is used", () => {
  const noAgent = failure("No agent available", "srv-local");
  assert.equal(noAgent.status, 500);
  assert.equal(noAgent.kind, "no-agent");
  assert.ok(
    noAgent.message.startsWith("currently no tunnels available: No agent available\n"),
    noAgent.message,
  );
  assert.match(noAgent.message, /^server: srv-local$/m);
  assert.doesNotMatch(noAgent.message, /^agent:/m, "no agent line without an agent");

  const cases: [string, number, string][] = [
    ["dial tcp 127.0.0.1:1: connect: connection refused", 502, "dial-refused"],
    ["dial tcp 198.18.0.254:1234: i/o timeout", 504, "dial-timeout"],
    ["dial tcp: lookup foo on 10.96.0.10:53: no such host", 502, "dns-failure"],
    ["accept: too many open files", 503, "server-overloaded"],
    ["something odd", 502, "unknown"],
  ];
  for (const [text, status, kind] of cases) {
    const err = failure(text, "srv-local");
    assert.equal(err.status, status, text);
    assert.equal(err.kind, kind, text);
    assert.equal(err.message, `${text}\nkind: ${kind}\nserver: srv-local\n`);
  }
});

// --------------------------------------------------- the frontend over a socket

Deno.test("a head sent in small pieces is parsed; DIAL_REQ carries the target", async () => {
  const h = frontend();
  const reading = h.fe.readHead();
  for (
    const piece of [
      "CONN",
      "ECT 127.0.0.1:",
      "8080 HT",
      "TP/1.1\r",
      "\nHost: x\r\nUser-Ag",
      "ent: t",
    ]
  ) {
    h.socket.push(piece);
    await settle(1);
  }
  h.socket.push("\r\n\r");
  await settle(1);
  assert.equal(h.socket.written.length, 0, "nothing answered before the head is complete");
  h.socket.push("\n");
  assert.equal(await reading, true);
  assert.ok(h.socket.reads >= 8, `read in pieces (${h.socket.reads} reads)`);
  assert.equal(h.fe.target, "127.0.0.1:8080");
  assert.equal(h.fe.userAgent, "t");
  h.start();
  assert.equal(h.packets[0]?.type, "DIAL_REQ");
  const req = h.packets[0] as Extract<Packet, { type: "DIAL_REQ" }>;
  assert.equal(req.dialRequest.address, "127.0.0.1:8080");
  assert.equal(req.dialRequest.protocol, "tcp");
  assert.equal(h.socket.written.length, 0, "no 200 before the DIAL_RSP");
  h.socket.end();
  await settle();
  assert.equal(h.ends.length, 1, "client EOF while dialing ends the stream (cancels the dial)");
  assert.equal(h.packets.filter((p) => p.type === "CLOSE_REQ").length, 0);
  assert.equal(h.socket.closed, true);
});

Deno.test("pipelined bytes are the first DATA after the DIAL_RSP; the 200 comes first", async () => {
  const h = frontend({}, 7); // partial socket writes
  const reading = h.fe.readHead();
  h.socket.push("CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n");
  assert.equal(await reading, true);
  h.start();
  h.socket.push("Host: b\r\n\r\n");
  await settle();
  assert.equal(h.data().length, 0, "no DATA before the dial succeeded");
  assert.equal(h.socket.written.length, 0);

  assert.equal(h.fe.send(dialResponse(h.dialId(), 42n)), true);
  // The agent's first bytes, in the same tick as the DIAL_RSP (server-speaks-first).
  h.fe.send(dataPacket(42n, encoder.encode("banner")));
  await settle();
  assert.equal(h.socket.output, ESTABLISHED + "banner", "the 200 precedes every tunneled byte");
  const early = h.data().map((p) => decoder.decode(p.data.data)).join("");
  assert.equal(early, "GET / HTTP/1.1\r\nHost: b\r\n\r\n");
  assert.ok(h.data().every((p) => p.data.connectId === 42n));
  const firstDataIndex = h.packets.findIndex((p) => p.type === "DATA");
  assert.equal(h.packets[firstDataIndex - 1]?.type, "DIAL_REQ", "early bytes follow the dial");

  h.socket.push("later");
  await settle();
  assert.equal(decoder.decode(h.data().at(-1)!.data.data), "later");

  // Client closes: the connection is closed through the agent (CLOSE_REQ), then CLOSE_RSP ends it.
  h.socket.end();
  await settle();
  const closeReq = h.packets.find((p) => p.type === "CLOSE_REQ");
  assert.ok(closeReq && closeReq.type === "CLOSE_REQ");
  assert.equal(closeReq.closeRequest.connectId, 42n);
  h.fe.send(closeResponse(42n));
  await settle();
  assert.equal(h.socket.closed, true);
  assert.equal(h.ends.length, 1);
});

Deno.test("early bytes beyond maxEarlyBytes wait in the socket and arrive in order", async () => {
  const h = frontend({ maxEarlyBytes: 10 });
  const reading = h.fe.readHead();
  h.socket.push("CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: x\r\n\r\n");
  assert.equal(await reading, true);
  h.start();
  const pieces = ["aaaaaaaa", "bbbbbbbb", "cccccccc", "dddddddd", "eeeeeeee"];
  for (const p of pieces) {
    h.socket.push(p);
    await settle(1);
  }
  await settle();
  assert.equal(h.data().length, 0);
  h.fe.send(dialResponse(h.dialId(), 3n));
  await settle(5);
  assert.equal(h.data().map((p) => decoder.decode(p.data.data)).join(""), pieces.join(""));
  h.fe.close();
  await settle();
});

Deno.test("DATA written by the core reaches the client; backpressure and CLOSE_RSP", async () => {
  const h = frontend();
  const reading = h.fe.readHead();
  h.socket.push("CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: x\r\n\r\n");
  assert.equal(await reading, true);
  h.start();
  h.fe.send(dialResponse(h.dialId(), 5n));
  h.fe.send(dataPacket(5n, encoder.encode("hello ")));
  h.fe.send(dataPacket(5n, encoder.encode("world")));
  h.fe.send(closeResponse(5n));
  assert.equal(h.fe.send(dataPacket(5n, encoder.encode("late"))), false, "closed: dropped");
  await settle();
  assert.equal(h.socket.output, ESTABLISHED + "hello world", "queued bytes flushed before close");
  assert.equal(h.socket.closed, true);
  assert.equal(h.ends.length, 1);
});

Deno.test("a CLOSE_RSP with an error flushes the queued bytes, then resets the socket", async () => {
  const h = frontend();
  const reading = h.fe.readHead();
  h.socket.push("CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: x\r\n\r\n");
  assert.equal(await reading, true);
  h.start();
  h.fe.send(dialResponse(h.dialId(), 5n));
  h.fe.send(dataPacket(5n, encoder.encode("partial")));
  h.fe.send(closeResponse(5n, "agent agent-1 disconnected"));
  await settle();
  assert.equal(h.socket.output, ESTABLISHED + "partial");
  assert.equal(h.socket.aborted, true, "a cut tunnel is reset, not closed cleanly");
  assert.match(String(h.ends[0]), /agent agent-1 disconnected/);
});

Deno.test("a CLOSE_RSP without an error closes the socket cleanly", async () => {
  const h = frontend();
  const reading = h.fe.readHead();
  h.socket.push("CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: x\r\n\r\n");
  assert.equal(await reading, true);
  h.start();
  h.fe.send(dialResponse(h.dialId(), 5n));
  h.fe.send(closeResponse(5n));
  await settle();
  assert.equal(h.socket.closed, true);
  assert.equal(h.socket.aborted, false);
});

Deno.test("pause() stops delivering client bytes until resume()", async () => {
  const h = frontend();
  const reading = h.fe.readHead();
  h.socket.push("CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: x\r\n\r\n");
  assert.equal(await reading, true);
  h.start();
  h.fe.send(dialResponse(h.dialId(), 9n));
  await settle();
  h.fe.pause();
  await settle();
  // A read already in flight may still deliver once; after that nothing until resume().
  h.socket.push("one");
  await settle();
  const count = h.data().length;
  h.socket.push("two");
  await settle();
  assert.equal(h.data().length, count, "paused: no more DATA");
  h.fe.resume();
  await settle();
  assert.equal(h.data().map((p) => decoder.decode(p.data.data)).join(""), "onetwo");
  h.fe.close();
  await settle();
});

Deno.test("a failed DIAL_RSP is answered with its status, kind header and body, then closed", async () => {
  const h = frontend();
  const reading = h.fe.readHead();
  h.socket.push("CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: x\r\n\r\n");
  assert.equal(await reading, true);
  h.start();
  const error = tagDialError("dial tcp 127.0.0.1:1: connect: connection refused", {
    serverId: "srv-1",
    agentId: "agent-a",
  });
  assert.equal(h.fe.send(dialResponse(h.dialId(), 0n, error)), false);
  await settle();
  const out = h.socket.output;
  assert.ok(
    out.startsWith(
      "HTTP/1.1 502 Bad Gateway: dial tcp 127.0.0.1:1: connect: connection refused " +
        "[knp: kind=dial-refused server=srv-1 agent=agent-a]\r\n",
    ),
    out,
  );
  assert.match(out, /\r\nX-Knp-Error-Kind: dial-refused\r\n/);
  assert.match(out, /\r\nConnection: close\r\n/);
  const body = out.slice(out.indexOf("\r\n\r\n") + 4);
  assert.equal(
    body,
    "dial tcp 127.0.0.1:1: connect: connection refused\nkind: dial-refused\nserver: srv-1\n" +
      "agent: agent-a\n",
  );
  assert.equal(h.socket.closed, true);
  assert.equal(h.ends.length, 1);
});

Deno.test("DIAL_CLS from the agent answers 502 tunnel-closed", async () => {
  const h = frontend();
  const reading = h.fe.readHead();
  h.socket.push("CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: x\r\n\r\n");
  assert.equal(await reading, true);
  h.start();
  h.fe.send({ type: "DIAL_CLS", closeDial: { random: h.dialId() } });
  await settle();
  const out = h.socket.output;
  assert.ok(
    out.startsWith(
      "HTTP/1.1 502 Bad Gateway: the agent cancelled the dial [knp: kind=tunnel-closed server=srv-1]\r\n",
    ),
    out,
  );
  assert.match(out, /\r\nX-Knp-Error-Kind: tunnel-closed\r\n/);
  assert.equal(
    out.slice(out.indexOf("\r\n\r\n") + 4),
    "the agent cancelled the dial\nkind: tunnel-closed\nserver: srv-1\n",
    "the same body shape as every dial failure",
  );
  assert.equal(h.socket.closed, true);
});

Deno.test("bad requests are answered and closed without a dial", async () => {
  const cases: [string, RegExp, string][] = [
    [
      "GET /success HTTP/1.1\r\nHost: x\r\n\r\n",
      /^HTTP\/1\.1 405 Method Not Allowed: this proxy only supports CONNECT passthrough \[knp: server=srv-1\]\r\n/,
      "this proxy only supports CONNECT passthrough\n",
    ],
    [
      "CONNECT nonsense HTTP/1.1\r\nHost: x\r\n\r\n",
      /^HTTP\/1\.1 400 Bad Request: invalid CONNECT target "nonsense" \[knp: server=srv-1\]\r\n/,
      "",
    ],
    [
      "CONNECT 127.0.0.1:80 HTTP/1.1\r\n\r\n",
      /^HTTP\/1\.1 400 Bad Request: missing required Host header \[knp: server=srv-1\]\r\n/,
      "",
    ],
    [
      "garbage\r\n\r\n",
      /^HTTP\/1\.1 400 Bad Request: malformed HTTP request line \[knp: server=srv-1\]\r\n/,
      "",
    ],
  ];
  for (const [head, status, body] of cases) {
    const h = frontend();
    const reading = h.fe.readHead();
    h.socket.push(head);
    assert.equal(await reading, false, head);
    await settle();
    const out = h.socket.output;
    assert.match(out, status, head);
    assert.doesNotMatch(out, /X-Knp-Error-Kind/, "not a dial error");
    if (body) assert.equal(out.slice(out.indexOf("\r\n\r\n") + 4), body);
    if (out.includes(" 405 ")) assert.match(out, /\r\nAllow: CONNECT\r\n/);
    assert.equal(h.socket.closed, true, head);
    assert.equal(h.packets.length, 0);
  }
});

Deno.test("a head over the limit gets 431 and a close", async () => {
  for (const limit of [1024, undefined]) {
    const h = frontend(limit === undefined ? {} : { maxHeaderBytes: limit });
    const reading = h.fe.readHead();
    h.socket.push("CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: x\r\n");
    const line = `X-Filler: ${"f".repeat(1000)}\r\n`;
    for (let sent = 0; sent < (limit ?? 65536) + 2048; sent += line.length) h.socket.push(line);
    assert.equal(await reading, false);
    await settle();
    assert.ok(
      h.socket.output.startsWith(
        "HTTP/1.1 431 Request Header Fields Too Large: request head too large [knp: server=srv-1]\r\n",
      ),
      h.socket.output,
    );
    assert.equal(h.socket.closed, true);
  }
});

Deno.test("a head exactly at the limit is accepted", async () => {
  const h = frontend({ maxHeaderBytes: 200 });
  const start = "CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: x\r\nX-F: ";
  const head = start + "f".repeat(200 - start.length - 4) + "\r\n\r\n";
  assert.equal(head.length, 200);
  const reading = h.fe.readHead();
  h.socket.push(head + "pipelined");
  assert.equal(await reading, true);
  h.fe.close();
  await settle();
});

Deno.test("a head not complete in time gets 408 and a close", async () => {
  const h = frontend({ headerTimeoutMs: 100 });
  const started = Date.now();
  const reading = h.fe.readHead();
  h.socket.push("CONNECT 127.0.0.1:80 HTTP/1.1\r\n");
  const slow = setInterval(() => h.socket.push("X"), 20); // a dribbling client
  try {
    assert.equal(await reading, false);
  } finally {
    clearInterval(slow);
  }
  const elapsed = Date.now() - started;
  assert.ok(elapsed >= 90 && elapsed < 2000, `answered after ${elapsed} ms`);
  await settle();
  assert.ok(
    h.socket.output.startsWith(
      "HTTP/1.1 408 Request Timeout: request head not received in time [knp: server=srv-1]\r\n",
    ),
    h.socket.output,
  );
  assert.equal(h.socket.closed, true);
  assert.equal(h.packets.length, 0);
});

Deno.test("a client that closes during the head gets no answer", async () => {
  const h = frontend();
  const reading = h.fe.readHead();
  h.socket.push("CONNECT 127.0.0.1:80 HT");
  h.socket.end();
  assert.equal(await reading, false);
  await settle();
  assert.equal(h.socket.written.length, 0);
  assert.equal(h.socket.closed, true);
});

Deno.test("a head of 64 KiB sent one byte per read is parsed in bounded time", async () => {
  const h = frontend({ maxHeaderBytes: 64 * 1024 });
  let head = "CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: x\r\n";
  while (head.length < 64 * 1024 - 200) head += `X-F: ${"f".repeat(90)}\r\n`;
  head += "\r\n";
  const bytes = encoder.encode(head);
  const reading = h.fe.readHead();
  const started = performance.now();
  for (let i = 0; i < bytes.length; i++) h.socket.push(bytes.subarray(i, i + 1));
  assert.equal(await reading, true);
  const ms = performance.now() - started;
  assert.equal(h.socket.reads, bytes.length);
  assert.ok(ms < 1000, `took ${ms.toFixed(0)} ms for ${bytes.length} one-byte reads`);
  h.fe.close();
  await settle();
});
