/**
 * {@linkcode FrameRules}: what a server connection does with each received frame (RFC 9113 §5,
 * §6, §8): header blocks across CONTINUATION, stream states (idle, open, half-closed, closed),
 * flow-control accounting, SETTINGS, PING, GOAWAY, RST_STREAM, WINDOW_UPDATE and PRIORITY
 * checks, content-length, and the gRPC request checks (method, content type, path) that decide
 * between a gRPC call and a plain answer. A stream error resets that stream here; a connection
 * error is thrown to the connection.
 *
 * @module
 */

import { KnpError } from "@knp/core/errors";
import type { Frame } from "./frame.ts";
import { dependencyOf, ErrorCode, Flag, FrameType, H2Error } from "./frame.ts";
import { readU32, unpadded } from "./frame.ts";
import type { HeaderField } from "./hpack.ts";
import { contentLength, type HeaderMap, mergeTrailers, requestHeaders } from "./request_headers.ts";
import { H2ServerStream } from "./server_stream.ts";
import { PlainResponse } from "./plain_response.ts";
import type { H2ServerConnection } from "./connection.ts";
import { GrpcStatus } from "./grpc_message.ts";
import { answerPing, applyPeerSettings, beginBlock, blockBytes } from "./frame_common.ts";
import { checkFrame, resetOrThrow } from "./frame_common.ts";
import { continueBlock, creditConnectionWindow, type HeaderBlock } from "./frame_common.ts";
import { windowIncrement } from "./frame_common.ts";

/** Declared and received body sizes of a stream with a content-length. */
interface BodyCount {
  declared: number;
  received: number;
}

/** Applies received frames to a connection. */
export class FrameRules {
  #conn: H2ServerConnection;
  #block: HeaderBlock | undefined;
  #settingsSeen = false;
  #bodies = new Map<number, BodyCount>();

  /** Rules acting on `conn`. */
  constructor(conn: H2ServerConnection) {
    this.#conn = conn;
  }

  /** Forgets what is kept about a finished stream. */
  forget(id: number): void {
    this.#bodies.delete(id);
  }

  /** Handles one frame. @throws {Error} a connection error */
  onFrame(frame: Frame): void {
    try {
      this.#dispatch(frame);
    } catch (err) {
      resetOrThrow(err, this.#conn);
    }
  }

  #dispatch(frame: Frame): void {
    checkFrame(frame, this.#block !== undefined, this.#settingsSeen);
    switch (frame.type) {
      case FrameType.DATA:
        return this.#onData(frame);
      case FrameType.HEADERS:
        return this.#onHeaders(frame);
      case FrameType.CONTINUATION:
        return this.#onContinuation(frame);
      case FrameType.PRIORITY:
        if (dependencyOf(frame) === frame.streamId) {
          throw streamError(frame.streamId, "self-dependency");
        }
        return;
      case FrameType.RST_STREAM:
        return this.#onReset(frame);
      case FrameType.SETTINGS:
        return this.#onSettings(frame);
      case FrameType.PUSH_PROMISE:
        throw connError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE from a client");
      case FrameType.PING:
        return answerPing(frame, this.#conn.writer);
      case FrameType.GOAWAY:
        this.#conn.peerGoaway = true;
        if (this.#conn.streams.size === 0) void this.#conn.shutdown(true);
        return;
      case FrameType.WINDOW_UPDATE:
        return this.#onWindowUpdate(frame);
    }
  }

  #onSettings(frame: Frame): void {
    if (frame.flags & Flag.ACK) return;
    this.#settingsSeen = true;
    const conn = this.#conn;
    applyPeerSettings(frame, conn, (stream) => conn.activate(stream));
  }

  #onWindowUpdate(frame: Frame): void {
    const increment = windowIncrement(frame);
    const id = frame.streamId;
    if (id === 0) return creditConnectionWindow(this.#conn.writer, increment);
    if (id > this.#conn.lastStreamId) {
      throw connError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream");
    }
    this.#conn.streams.get(id)?.onWindowUpdate(increment);
  }

  #onReset(frame: Frame): void {
    const id = frame.streamId;
    if (id > this.#conn.lastStreamId) {
      throw connError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on an idle stream");
    }
    const code = readU32(frame.payload, 0);
    this.#conn.streams.get(id)?.onReset(
      new KnpError("TUNNEL_CLOSED", `stream cancelled by peer (HTTP/2 error ${code})`),
    );
    // Frames after the peer's own RST_STREAM are errors, not late arrivals (RFC 9113 §5.1).
    this.#conn.forgetReset(id);
  }

  #onData(frame: Frame): void {
    const conn = this.#conn;
    const flowBytes = frame.payload.length;
    conn.connectionData(flowBytes);
    const data = unpadded(frame);
    const id = frame.streamId;
    const endStream = (frame.flags & Flag.END_STREAM) !== 0;
    const stream = conn.streams.get(id);
    if (!stream) {
      if (id > conn.lastStreamId) {
        throw connError(ErrorCode.PROTOCOL_ERROR, "DATA on an idle stream");
      }
      if (conn.wasReset(id)) return;
      throw new H2Error(ErrorCode.STREAM_CLOSED, id, "DATA on a closed stream");
    }
    if (stream.remoteEnded) throw new H2Error(ErrorCode.STREAM_CLOSED, id, "DATA after END_STREAM");
    this.#countBody(id, data.length, endStream);
    stream.onData(data, flowBytes, endStream);
  }

  #countBody(id: number, bytes: number, endStream: boolean): void {
    const body = this.#bodies.get(id);
    if (!body) return;
    body.received += bytes;
    if (body.received > body.declared || (endStream && body.received !== body.declared)) {
      throw streamError(id, "body length differs from content-length");
    }
  }

  #onHeaders(frame: Frame): void {
    const id = frame.streamId;
    if (id % 2 === 0) throw connError(ErrorCode.PROTOCOL_ERROR, `client stream id ${id} is even`);
    const error = dependencyOf(frame) === id ? streamError(id, "self-dependency") : undefined;
    const block = beginBlock(frame, error);
    if (frame.flags & Flag.END_HEADERS) this.#complete(block);
    else this.#block = block;
  }

  #onContinuation(frame: Frame): void {
    const block = continueBlock(this.#block, frame, 2 * this.#conn.local.maxHeaderListSize);
    if (!block) return;
    this.#block = undefined;
    this.#complete(block);
  }

  #complete(block: HeaderBlock): void {
    const fields = this.#conn.decoder.decode(blockBytes(block));
    if (block.error) throw block.error;
    const id = block.streamId;
    const conn = this.#conn;
    const stream = conn.streams.get(id);
    if (stream) {
      if (stream.remoteEnded) {
        throw new H2Error(ErrorCode.STREAM_CLOSED, id, "HEADERS after END_STREAM");
      }
      if (!block.endStream) throw streamError(id, "trailers without END_STREAM");
      mergeTrailers(id, fields, new Map());
      this.#countBody(id, 0, true);
      stream.onRemoteEnd();
      return;
    }
    if (id <= conn.lastStreamId) {
      if (conn.wasReset(id)) return;
      throw connError(ErrorCode.STREAM_CLOSED, "HEADERS on a closed stream");
    }
    conn.lastStreamId = id;
    if (conn.draining) {
      conn.resetStream(id, ErrorCode.REFUSED_STREAM, new KnpError("TUNNEL_CLOSED", "draining"));
      return;
    }
    this.#open(id, fields, block.endStream);
  }

  #open(id: number, fields: HeaderField[], endStream: boolean): void {
    const conn = this.#conn;
    const headers = requestHeaders(id, fields);
    const declared = contentLength(id, headers);
    if (declared !== undefined) {
      this.#bodies.set(id, { declared, received: 0 });
      if (endStream) this.#countBody(id, 0, true);
    }
    const plain = plainAnswer(headers, conn.options.path);
    if (plain) {
      const answer = new PlainResponse(
        id,
        conn,
        conn.peerInitialWindow,
        plain[0],
        plain[1],
        endStream,
      );
      if (!answer.over) conn.opened(answer);
      return;
    }
    const stream = new H2ServerStream(id, headers, conn, {
      maxMessageBytes: conn.options.maxMessageBytes,
      recvWindow: conn.local.streamWindow,
      sendWindow: conn.peerInitialWindow,
      peer: conn.peer,
    });
    conn.opened(stream);
    conn.options.onStream(stream);
    if (endStream) stream.onRemoteEnd();
  }
}

/** The answer to a request that is not a call of `path`, or undefined for a gRPC call. */
function plainAnswer(headers: HeaderMap, path: string): [HeaderField[], string] | undefined {
  const method = headers.get(":method")![0];
  const type = headers.get("content-type")?.[0] ?? "";
  if (method !== "POST") {
    return [[[":status", "405"], ["allow", "POST"], ["content-type", "text/plain"]], "gRPC only\n"];
  }
  if (!/^application\/grpc($|[+;])/.test(type)) {
    return [[[":status", "415"], ["content-type", "text/plain"]], "not a gRPC request\n"];
  }
  if (headers.get(":path")![0] !== path) {
    return [[
      [":status", "200"],
      ["content-type", "application/grpc"],
      ["grpc-status", String(GrpcStatus.UNIMPLEMENTED)],
      ["grpc-message", "unknown method"],
    ], ""];
  }
  return undefined;
}

function connError(code: number, message: string): H2Error {
  return new H2Error(code, 0, message);
}

function streamError(id: number, message: string): H2Error {
  return new H2Error(ErrorCode.PROTOCOL_ERROR, id, message);
}
