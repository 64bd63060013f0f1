/**
 * A minimal HTTP/1.1 client over any byte connection with web streams (a tunneled connection),
 * enough for tests and the demo: one request, `Connection: close`, whole response read to EOF.
 *
 * @module
 */

/** A connection with web-stream sides. */
export interface ByteConn {
  readable: ReadableStream<Uint8Array>;
  writable: WritableStream<Uint8Array>;
}

/** A parsed response. */
export interface HttpResult {
  status: number;
  statusLine: string;
  headers: Record<string, string>;
  body: Uint8Array;
}

/** Sends one request and reads the response until the server closes. */
export async function httpRequest(
  conn: ByteConn,
  method: string,
  path: string,
  body?: Uint8Array,
): Promise<HttpResult> {
  const writer = conn.writable.getWriter();
  const head = `${method} ${path} HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n` +
    (body ? `Content-Length: ${body.length}\r\n` : "") + "\r\n";
  const reading = new Response(conn.readable).arrayBuffer();
  await writer.write(new TextEncoder().encode(head));
  if (body) await writer.write(body);
  writer.releaseLock();
  const raw = new Uint8Array(await reading);
  let end = -1;
  for (let i = 0; i + 3 < raw.length; i++) {
    if (raw[i] === 13 && raw[i + 1] === 10 && raw[i + 2] === 13 && raw[i + 3] === 10) {
      end = i;
      break;
    }
  }
  if (end < 0) throw new Error(`no HTTP response head in ${raw.length} bytes`);
  const lines = new TextDecoder().decode(raw.subarray(0, end)).split("\r\n");
  const statusLine = lines[0] ?? "";
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const i = line.indexOf(":");
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  let bodyBytes: Uint8Array = raw.subarray(end + 4);
  if (headers["transfer-encoding"]?.toLowerCase() === "chunked") bodyBytes = dechunk(bodyBytes);
  return { status: Number(statusLine.split(" ")[1]), statusLine, headers, body: bodyBytes };
}

/** Decodes a complete chunked body. @throws {Error} when it is malformed or cut short */
export function dechunk(data: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [];
  let pos = 0;
  let total = 0;
  while (true) {
    let lineEnd = pos;
    while (lineEnd + 1 < data.length && !(data[lineEnd] === 13 && data[lineEnd + 1] === 10)) {
      lineEnd++;
    }
    if (lineEnd + 1 >= data.length) throw new Error("chunked body cut short");
    const size = parseInt(new TextDecoder().decode(data.subarray(pos, lineEnd)), 16);
    if (Number.isNaN(size)) throw new Error("bad chunk size");
    pos = lineEnd + 2;
    if (size === 0) break;
    parts.push(data.subarray(pos, pos + size));
    total += size;
    pos += size + 2;
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
