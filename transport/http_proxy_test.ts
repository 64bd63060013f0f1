import assert from "node:assert/strict";
import { KnpError } from "@knp/core/errors";
import {
  bypassesProxy,
  connectTarget,
  parseNoProxy,
  parseProxyUrl,
  ProxyConnectError,
} from "./http_proxy.ts";

Deno.test("parseProxyUrl: http URLs, scheme-less host:port, default port, credentials", () => {
  assert.deepEqual(parseProxyUrl("http://proxy.corp:3128", "f"), {
    hostname: "proxy.corp",
    port: 3128,
    display: "http://proxy.corp:3128",
  });
  assert.equal(parseProxyUrl("proxy.corp:8080", "f").port, 8080);
  assert.equal(parseProxyUrl("http://proxy.corp", "f").port, 80);
  assert.equal(parseProxyUrl("http://[fd00::1]:3128/", "f").hostname, "fd00::1");
  const withUser = parseProxyUrl("http://us%3Aer:p%40ss@10.0.0.1:3128", "f");
  assert.equal(withUser.authorization, `Basic ${btoa("us:er:p@ss")}`);
  assert.equal(withUser.display, "http://10.0.0.1:3128", "no credentials in the display form");
});

Deno.test("parseProxyUrl refuses other schemes naming the source", () => {
  for (const text of ["https://p:443", "socks5://p:1080"]) {
    assert.throws(
      () => parseProxyUrl(text, "HTTPS_PROXY"),
      (e: unknown) =>
        e instanceof KnpError && e.code === "INVALID_FLAG" &&
        /^HTTPS_PROXY: only http:\/\/ proxies/.test(e.message),
    );
  }
  assert.throws(() => parseProxyUrl("http://", "f"), KnpError);
});

Deno.test("NO_PROXY: names cover subdomains, .suffix only subdomains, IPs, CIDRs, ports, *", () => {
  const { rules, invalid } = parseNoProxy(
    "corp.example, .svc, *.local, 10.0.0.0/8, 192.168.1.7, [fd00::1], ::2, api.x:6443",
    "NO_PROXY",
    false,
  );
  assert.deepEqual(invalid, []);
  const bypass = (address: string) => bypassesProxy(rules, address);
  assert.ok(bypass("corp.example:443"));
  assert.ok(bypass("a.corp.example:443"));
  assert.ok(!bypass("xcorp.example:443"));
  assert.ok(bypass("kube-dns.kube-system.svc:53"));
  assert.ok(!bypass("svc:53"), ".svc covers subdomains only");
  assert.ok(bypass("printer.local:631"));
  assert.ok(bypass("10.1.2.3:10250"));
  assert.ok(bypass("192.168.1.7:22"));
  assert.ok(!bypass("192.168.1.8:22"));
  assert.ok(bypass("[fd00::1]:443"));
  assert.ok(bypass("[::2]:443"));
  assert.ok(bypass("api.x:6443"));
  assert.ok(!bypass("api.x:443"), "a port narrows the entry");
  assert.ok(!bypass("127.0.0.1:80"), "loopback is not bypassed implicitly");
  assert.ok(bypassesProxy(parseNoProxy("*", "NO_PROXY", false).rules, "anything.example:1"));
  assert.ok(!bypassesProxy([], "10.0.0.1:443"));
});

Deno.test("NO_PROXY: unreadable entries are skipped (environment) or refused (flags)", () => {
  const lenient = parseNoProxy("ok.example,bad host!,10.0.0.0/99", "NO_PROXY", false);
  assert.deepEqual(lenient.invalid, ["host!", "10.0.0.0/99"], '"bad" is a fine name');
  assert.ok(bypassesProxy(lenient.rules, "ok.example:1"));
  assert.throws(
    () => parseNoProxy("10.0.0.0/99", "--knp-egress-no-proxy", true),
    (e: unknown) =>
      e instanceof KnpError && e.code === "INVALID_FLAG" &&
      e.message === '--knp-egress-no-proxy: bad entry "10.0.0.0/99"',
  );
});

Deno.test("ProxyConnectError: status, reason and dial error kind", () => {
  const refused = new ProxyConnectError("http://p:3128", "10.0.0.1:443", 403, "Forbidden");
  assert.equal(refused.message, "proxy http://p:3128 refused CONNECT 10.0.0.1:443: 403 Forbidden");
  assert.equal(refused.kind, "dial-refused");
  assert.equal(new ProxyConnectError("p", "t", 504, "Gateway Timeout").kind, "dial-timeout");
  assert.equal(connectTarget("fd00::1", 443), "[fd00::1]:443");
  assert.equal(connectTarget("10.0.0.1", 443), "10.0.0.1:443");
});
