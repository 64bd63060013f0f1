import assert from "node:assert/strict";
import { tagDialError } from "@knp/core/dial_errors";
import {
  dialFailure,
  HttpError,
  MAX_REASON_PHRASE,
  overloaded,
  reasonPhrase,
  responseBytes,
} from "./http_connect_errors.ts";

const statusLine = (bytes: Uint8Array) => new TextDecoder().decode(bytes).split("\r\n", 1)[0];

Deno.test("the reason phrase carries the reason, kind, server and agent", () => {
  const text = tagDialError("dial tcp 10.0.0.7:80: connect: connection refused", {
    serverId: "s1",
    agentId: "a1",
  });
  assert.equal(
    statusLine(responseBytes(dialFailure(text, "local"), "local")),
    "HTTP/1.1 502 Bad Gateway: dial tcp 10.0.0.7:80: connect: connection refused " +
      "[knp: kind=dial-refused server=s1 agent=a1]",
  );
  assert.equal(
    statusLine(responseBytes(overloaded("too many heads", "s2"), "s2")),
    "HTTP/1.1 503 Service Unavailable: too many heads [knp: kind=server-overloaded server=s2]",
  );
});

Deno.test("the reason phrase is one bounded line of visible ASCII", () => {
  const nasty = `line\rone\u0000\u00e9\u2603 ${"x".repeat(2000)}\nInjected: header`;
  const phrase = reasonPhrase(
    new HttpError(502, "Bad Gateway", nasty, { kind: "unknown", agentId: "a\r\n1" }),
    "srv",
  );
  assert.ok(phrase.length <= MAX_REASON_PHRASE, `${phrase.length}`);
  assert.match(phrase, /^[\x20-\x7e]+$/, "visible ASCII and spaces only");
  assert.ok(phrase.startsWith("Bad Gateway: line one xxx"), phrase);
  assert.doesNotMatch(phrase, /Injected/, "only the first line of the body");
  assert.ok(phrase.endsWith("... [knp: kind=unknown server=srv agent=a 1]"), phrase);
});
