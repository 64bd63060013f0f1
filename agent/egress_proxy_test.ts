import assert from "node:assert/strict";
import { KnpError } from "@knp/core/errors";
import {
  type AgentEgressOptions,
  egressProxyNeeds,
  egressProxyOf,
  proxyFor,
  validateAgentEgressOptions,
} from "./egress_proxy.ts";

function options(o: Partial<AgentEgressOptions> = {}): AgentEgressOptions {
  return { knpEgressProxy: "", knpEgressNoProxy: [], ...o };
}

function envOf(vars: Record<string, string>, read: string[] = []) {
  return (name: string) => {
    read.push(name);
    return vars[name];
  };
}

Deno.test("egress: HTTPS_PROXY, then https_proxy, then HTTP_PROXY/http_proxy", () => {
  const pick = (vars: Record<string, string>) => egressProxyOf(options(), undefined, envOf(vars));
  assert.equal(pick({}), undefined);
  assert.equal(
    pick({ HTTPS_PROXY: "http://a:1", https_proxy: "http://b:2" })?.source,
    "HTTPS_PROXY",
  );
  assert.equal(pick({ https_proxy: "http://b:2", HTTP_PROXY: "http://c:3" })?.proxy.port, 2);
  assert.equal(pick({ HTTP_PROXY: "http://c:3" })?.source, "HTTP_PROXY");
  assert.equal(pick({ http_proxy: "d:4" })?.proxy.hostname, "d");
  assert.equal(pick({ HTTPS_PROXY: "  " }), undefined, "blank counts as unset");
});

Deno.test("egress: NO_PROXY and --knp-egress-no-proxy together decide the bypass", () => {
  const egress = egressProxyOf(
    options({ knpEgressNoProxy: ["10.0.0.0/8"] }),
    undefined,
    envOf({
      HTTPS_PROXY: "http://p:3128",
      NO_PROXY: ".svc,bad host!",
      no_proxy: "ignored.example",
    }),
  );
  assert.ok(egress);
  assert.equal(proxyFor(egress, "10.1.1.1:443"), undefined);
  assert.equal(proxyFor(egress, "a.ns.svc:443"), undefined);
  assert.equal(
    proxyFor(egress, "ignored.example:443"),
    egress.proxy,
    "NO_PROXY wins over no_proxy",
  );
  assert.equal(proxyFor(egress, "192.168.0.1:443"), egress.proxy);
});

Deno.test("egress: the flag replaces the environment; none turns the proxy off", () => {
  const read: string[] = [];
  const env = envOf({ HTTPS_PROXY: "http://env:1", NO_PROXY: "*" }, read);
  const flagged = egressProxyOf(options({ knpEgressProxy: "http://flag:2" }), undefined, env);
  assert.equal(flagged?.proxy.hostname, "flag");
  assert.equal(flagged?.source, "--knp-egress-proxy");
  assert.deepEqual(flagged?.noProxy, []);
  assert.equal(egressProxyOf(options({ knpEgressProxy: "none" }), undefined, env), undefined);
  assert.deepEqual(read, [], "no variable is read when the flag is set");
});

Deno.test("egress: a bad proxy variable is a CONFIG error naming it", () => {
  assert.throws(
    () => egressProxyOf(options(), undefined, envOf({ HTTPS_PROXY: "socks5://p:1080" })),
    (e: unknown) =>
      e instanceof KnpError && e.code === "CONFIG" && /^HTTPS_PROXY: /.test(e.message),
  );
});

Deno.test("egress: flag validation names the flag", () => {
  validateAgentEgressOptions(
    options({ knpEgressProxy: "http://p:3128", knpEgressNoProxy: ["a.b"] }),
  );
  const invalid = (o: Partial<AgentEgressOptions>, pattern: RegExp) =>
    assert.throws(
      () => validateAgentEgressOptions(options(o)),
      (e: unknown) => e instanceof KnpError && e.code === "INVALID_FLAG" && pattern.test(e.message),
    );
  invalid({ knpEgressProxy: "https://p:443" }, /^--knp-egress-proxy: only http:\/\//);
  invalid({ knpEgressNoProxy: ["10.0.0.0/40"] }, /^--knp-egress-no-proxy: bad entry/);
  invalid({ knpEgressProxy: "none", knpEgressNoProxy: ["a.b"] }, /has no effect/);
});

Deno.test("egress: the proxy variables are a permission need only without the flag", () => {
  assert.deepEqual(egressProxyNeeds(options()).map((n) => n.value), [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
  ]);
  assert.deepEqual(egressProxyNeeds(options({ knpEgressProxy: "none" })), []);
  assert.deepEqual(egressProxyNeeds(options({ knpEgressProxy: "http://p:1" })), []);
});
