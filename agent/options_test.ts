import assert from "node:assert/strict";
import { KnpError } from "@knp/core/errors";
import { KLOG_FLAGS } from "@knp/cli/common_flags";
import { emptyFiles, KLOG_DEFAULTS, optionsTester, UUID } from "@knp/testing/options";
import {
  AGENT_FLAGS,
  agentHelp,
  agentIdentifiersProblem,
  type AgentOptions,
  labelSelectorProblem,
  parseAgentOptions,
  validateAgentOptions,
} from "./options.ts";

const { parse, options, assertInvalid } = optionsTester(parseAgentOptions, validateAgentOptions);

/** Empty files standing in for certificates, the token and the kubeconfig. */
const { CERT, KEY, CA, TOKEN, KUBECONFIG, MISSING } = emptyFiles("knp-agent-options-", {
  CERT: "agent.crt",
  KEY: "agent.key",
  CA: "ca.crt",
  TOKEN: "token",
  KUBECONFIG: "kubeconfig",
});

Deno.test("parseAgentOptions() pins every upstream default", () => {
  const { options, notImplemented, deprecated } = parse([]);
  const { agentId, ...rest } = options;
  assert.match(agentId, UUID);
  assert.deepEqual(rest, {
    proxyServerHost: "127.0.0.1",
    proxyServerPort: 8091,
    caCert: "",
    agentCert: "",
    agentKey: "",
    alpnProto: [],
    serviceAccountTokenPath: "",
    keepaliveTime: 3_600_000,
    agentIdentifiers: "",
    syncInterval: 1_000,
    syncIntervalCap: 10_000,
    probeInterval: 1_000,
    syncForever: false,
    countServerLeases: false,
    leaseNamespace: "kube-system",
    leaseLabelSelector: "k8s-app=konnectivity-server",
    serverCountSource: "default",
    kubeconfig: "",
    kubeApiContentType: "application/vnd.kubernetes.protobuf",
    xfrChannelSize: 150,
    warnOnChannelLimit: false,
    healthServerHost: "",
    healthServerPort: 8093,
    adminBindAddress: "127.0.0.1",
    adminServerPort: 8094,
    enableProfiling: false,
    enableContentionProfiling: false,
    knpLogFormat: "json",
    knpHttpTimeout: 10_000,
    knpWebsocketPort: 0,
    knpFastLink: true,
    knpGrpcTransport: "native",
    knpAllowDestinations: [],
    knpDenyDestinations: [],
    knpDestinationPreset: "",
    knpPodCidr: [],
    knpServiceCidr: [],
    knpNodeAddresses: [],
    knpKubeletPort: 10250,
    knpServerPingInterval: 10_000,
    knpServerPingTimeout: 5_000,
    knpEgressProxy: "",
    knpEgressNoProxy: [],
    knpDrainTimeout: 25_000,
    knpPrintPermissions: false,
    // klog
    ...KLOG_DEFAULTS,
  });
  assert.deepEqual(notImplemented, []);
  assert.deepEqual(deprecated, []);
  // The defaults are valid.
  validateAgentOptions(options);
});

Deno.test("parseAgentOptions() takes the agent ID from PROXY_AGENT_ID; the flag wins", () => {
  assert.equal(parse([], { PROXY_AGENT_ID: "env-id" }).options.agentId, "env-id");
  assert.equal(
    parse(["--agent-id", "flag-id"], { PROXY_AGENT_ID: "env-id" }).options.agentId,
    "flag-id",
  );
  assert.match(parse([], { PROXY_AGENT_ID: "" }).options.agentId, UUID);
  assert.notEqual(parse([]).options.agentId, parse([]).options.agentId);
});

Deno.test("AGENT_FLAGS covers every upstream agent flag with upstream spelling", () => {
  const upstream = [
    "proxy-server-host",
    "proxy-server-port",
    "ca-cert",
    "agent-cert",
    "agent-key",
    "alpn-proto",
    "service-account-token-path",
    "keepalive-time",
    "agent-id",
    "agent-identifiers",
    "sync-interval",
    "sync-interval-cap",
    "probe-interval",
    "sync-forever",
    "count-server-leases",
    "lease-namespace",
    "lease-label-selector",
    "lease-label",
    "server-count-source",
    "kubeconfig",
    "kube-api-content-type",
    "xfr-channel-size",
    "warn-on-channel-limit",
    "health-server-host",
    "health-server-port",
    "admin-bind-address",
    "admin-server-port",
    "enable-profiling",
    "enable-contention-profiling",
    ...KLOG_FLAGS.map((spec) => spec.name),
  ];
  const names = AGENT_FLAGS.map((spec) => spec.name);
  assert.deepEqual(names.filter((name) => !upstream.includes(name)), [
    "knp-log-format",
    "knp-http-timeout",
    "knp-websocket-port",
    "knp-fast-link",
    "knp-grpc-transport",
    "knp-allow-destinations",
    "knp-deny-destinations",
    "knp-destination-preset",
    "knp-pod-cidr",
    "knp-service-cidr",
    "knp-node-addresses",
    "knp-kubelet-port",
    "knp-server-ping-interval",
    "knp-server-ping-timeout",
    "knp-egress-proxy",
    "knp-egress-no-proxy",
    "knp-drain-timeout",
    "knp-print-permissions",
  ]);
  assert.deepEqual(upstream.filter((name) => !names.includes(name)), []);
  const klog = new Set(KLOG_FLAGS.map((spec) => spec.name));
  assert.deepEqual(
    AGENT_FLAGS.filter((spec) => spec.implemented !== true && !klog.has(spec.name)).map((spec) =>
      spec.name
    ),
    [
      "kube-api-content-type",
      "xfr-channel-size",
      "enable-profiling",
      "enable-contention-profiling",
    ],
  );
});

Deno.test("parseAgentOptions() accepts the upstream external-agent harness arguments", () => {
  const result = parse([
    "--alpn-proto=[]",
    "--lease-label=k8s-app=konnectivity-server",
    "--keepalive-time=1h0m0s",
    "--sync-interval=100ms",
    "--sync-interval-cap=1s",
    "--probe-interval=100ms",
    "--v=1",
    "--logtostderr=true",
  ]);
  const { options } = result;
  assert.deepEqual(options.alpnProto, []);
  assert.equal(options.leaseLabelSelector, "k8s-app=konnectivity-server");
  assert.equal(options.keepaliveTime, 3_600_000);
  assert.equal(options.syncInterval, 100);
  assert.equal(options.syncIntervalCap, 1_000);
  assert.equal(options.probeInterval, 100);
  assert.equal(options.v, 1);
  assert.equal(options.logtostderr, true);
  assert.deepEqual(result.notImplemented, []);
  assert.deepEqual(result.deprecated, [
    "flag --lease-label has been deprecated: use --lease-label-selector instead",
  ]);
  validateAgentOptions(options);
});

Deno.test("parseAgentOptions() accepts a full upstream-style command line", () => {
  const { options, notImplemented } = parse([
    "--proxy-server-host=konnectivity.example.com",
    "--proxy-server-port",
    "8132",
    `--ca-cert=${CA}`,
    `--agent-cert=${CERT}`,
    `--agent-key=${KEY}`,
    "--alpn-proto=konnectivity,h2",
    "--alpn-proto=x",
    `--service-account-token-path=${TOKEN}`,
    "--agent-identifiers=host=node1&ipv4=10.0.0.1&default-route=true",
    "--sync-forever",
    "--xfr-channel-size=300",
    "--warn-on-channel-limit",
    "--health-server-host=0.0.0.0",
    "--health-server-port=8134",
    "--admin-bind-address=0.0.0.0",
    "--admin-server-port=8133",
    "--server-count-source=",
    "--knp-log-format=text",
    "-v",
    "3",
  ]);
  assert.equal(options.proxyServerHost, "konnectivity.example.com");
  assert.equal(options.proxyServerPort, 8132);
  assert.deepEqual(options.alpnProto, ["konnectivity", "h2", "x"]);
  assert.equal(options.agentIdentifiers, "host=node1&ipv4=10.0.0.1&default-route=true");
  assert.equal(options.syncForever, true);
  assert.equal(options.xfrChannelSize, 300);
  assert.equal(options.warnOnChannelLimit, true);
  assert.equal(options.serverCountSource, "");
  assert.equal(options.v, 3);
  assert.deepEqual(notImplemented.map((n) => n.split(" ")[1]), ["--xfr-channel-size"]);
  validateAgentOptions(options);
});

Deno.test("parseAgentOptions(): the lease-count flags are implemented", () => {
  const { options, notImplemented } = parse([
    "--count-server-leases",
    "--lease-label-selector=app=other",
    "--server-count-source=max",
    "--enable-profiling=false",
  ]);
  assert.deepEqual(notImplemented, []);
  assert.equal(options.countServerLeases, true);
  assert.equal(options.leaseLabelSelector, "app=other");
  assert.equal(options.serverCountSource, "max");
  assertInvalid(
    ["--count-server-leases", "--lease-namespace="],
    "lease-namespace",
    /must not be empty/,
  );
});

Deno.test("parseAgentOptions() validates label selectors at parse time, naming the flag", () => {
  assert.throws(
    () => parseAgentOptions(["--lease-label-selector=a in ()"], {}),
    (err: unknown) =>
      err instanceof KnpError && err.code === "INVALID_FLAG" &&
      err.message.startsWith('invalid argument "a in ()" for "--lease-label-selector" flag: '),
  );
  assert.throws(
    () => parseAgentOptions(["--lease-label=-bad-=x"], {}),
    /^KnpError: invalid argument "-bad-=x" for "--lease-label" flag: invalid label key/,
  );
});

Deno.test("labelSelectorProblem() accepts Kubernetes selector syntax", () => {
  for (
    const ok of [
      "",
      "k8s-app=konnectivity-server",
      "a==b",
      "a!=b",
      "a=",
      "a",
      "!a",
      "a in (x, y)",
      "a notin (x)",
      "a in (x,)",
      "a>1",
      "a < 10",
      "example.com/app=x,tier in (web),!legacy",
      " a = b , c ",
    ]
  ) {
    assert.equal(labelSelectorProblem(ok), undefined, ok);
  }
  for (
    const bad of [
      "a in ()",
      "a in x",
      "a=b=c",
      "a>b",
      "=b",
      "a,",
      ",a",
      "a b",
      "-a=b",
      "a=-b",
      "a/b/c=d",
      "UPPER.com/a=b",
      `a=${"x".repeat(64)}`,
      "a in (x y)",
      "!a=b",
    ]
  ) {
    assert.notEqual(labelSelectorProblem(bad), undefined, bad);
  }
});

Deno.test("parseAgentOptions() returns { help: true } and agentHelp() lists the flags", () => {
  assert.deepEqual(parseAgentOptions(["--help"], {}), { help: true });
  assert.deepEqual(parseAgentOptions(["-h"], {}), { help: true });
  const help = agentHelp();
  assert.match(help, /^Usage of proxy-agent:\n/);
  assert.match(help, /--sync-interval duration .*\(default 1s\)/);
  assert.match(help, /--sync-interval-cap duration .*\(default 10s\)/);
  assert.match(help, /--keepalive-time duration .*\(default 1h0m0s\)/);
  assert.match(help, /--alpn-proto strings /);
  assert.match(help, /--agent-id string .*\(default \$PROXY_AGENT_ID, else a random UUID\)/);
  assert.doesNotMatch(help, /--count-server-leases .*not implemented/);
  assert.doesNotMatch(help, /--lease-label /);
});

Deno.test("parseAgentOptions() names the flag in parse errors", () => {
  assert.throws(
    () => parseAgentOptions(["--proxy-server-port=eighty"], {}),
    /^KnpError: invalid argument "eighty" for "--proxy-server-port" flag: /,
  );
  assert.throws(() => parseAgentOptions(["--nope"], {}), /^KnpError: unknown flag: --nope$/);
  assert.throws(
    () => parseAgentOptions(["--sync-interval=100"], {}),
    /for "--sync-interval" flag: missing unit/,
  );
});

Deno.test("validateAgentOptions() requires cert/key pairs and existing files", () => {
  validateAgentOptions(options([`--agent-cert=${CERT}`, `--agent-key=${KEY}`, `--ca-cert=${CA}`]));
  assertInvalid(["--knp-websocket-port=70000"], "knp-websocket-port", /port number or 0/);
  assertInvalid([`--agent-key=${KEY}`], "agent-cert");
  assertInvalid([`--agent-cert=${CERT}`], "agent-key");
  assertInvalid([`--agent-key=${MISSING}`, `--agent-cert=${CERT}`], "agent-key", /does not exist/);
  assertInvalid([`--agent-key=${KEY}`, `--agent-cert=${MISSING}`], "agent-cert", /does not exist/);
  assertInvalid([`--ca-cert=${MISSING}`], "ca-cert", /does not exist/);
});

Deno.test("validateAgentOptions() requires valid ports; 0 only for the agent's own listeners", () => {
  assertInvalid(["--proxy-server-port=0"], "proxy-server-port", /greater than 0, got 0/);
  for (const flag of ["health-server-port", "admin-server-port"]) {
    validateAgentOptions(options([`--${flag}=0`]));
    assertInvalid([`--${flag}=70000`], flag, /port number or 0/);
  }
  for (const flag of ["proxy-server-port", "health-server-port", "admin-server-port"]) {
    assertInvalid([`--${flag}=-1`], flag);
    // No reserved/ephemeral checks on the agent.
    validateAgentOptions(options([`--${flag}=80`]));
    validateAgentOptions(options([`--${flag}=60000`]));
  }
});

Deno.test("validateAgentOptions() requires --xfr-channel-size > 0", () => {
  assertInvalid(["--xfr-channel-size=0"], "xfr-channel-size", /greater than 0, got 0/);
});

Deno.test("validateAgentOptions() requires --enable-profiling for contention profiling", () => {
  assertInvalid(["--enable-contention-profiling"], "enable-profiling");
  validateAgentOptions(options(["--enable-contention-profiling", "--enable-profiling"]));
});

Deno.test("validateAgentOptions() requires sync-interval <= sync-interval-cap", () => {
  assertInvalid(
    ["--sync-interval=2s", "--sync-interval-cap=1s"],
    "sync-interval",
    /sync interval 2s must be less than sync interval cap 1s/,
  );
  assertInvalid(["--sync-interval=11s"], "sync-interval-cap", /cap 10s/);
  validateAgentOptions(options(["--sync-interval=1s", "--sync-interval-cap=1s"]));
});

Deno.test("validateAgentOptions() requires an existing token file and kubeconfig", () => {
  validateAgentOptions(
    options([`--service-account-token-path=${TOKEN}`, `--kubeconfig=${KUBECONFIG}`]),
  );
  assertInvalid(
    [`--service-account-token-path=${MISSING}`],
    "service-account-token-path",
    /does not exist/,
  );
  assertInvalid([`--kubeconfig=${MISSING}`], "kubeconfig", /does not exist/);
});

Deno.test("validateAgentOptions() checks --agent-identifiers keys", () => {
  validateAgentOptions(options([
    "--agent-identifiers=host=localhost&host=node1.mydomain.com&cidr=127.0.0.1/16&ipv4=1.2.3.4" +
    "&ipv4=5.6.7.8&ipv6=fd00::1&default-route=true",
  ]));
  validateAgentOptions(options(["--agent-identifiers=zone=us-east-1a&cidr=10.0.0.0/16"]));
  assertInvalid(
    ["--agent-identifiers=region=a"],
    "agent-identifiers",
    /agent address is invalid: unknown address type: region$/,
  );
  assertInvalid(["--agent-identifiers=zone=a%20b"], "agent-identifiers", /zone "a b" is not/);
  assertInvalid(["--agent-identifiers=uid=x"], "agent-identifiers", /unknown address type: uid/);
  assertInvalid(["--agent-identifiers=host=a;ipv4=b"], "agent-identifiers", /semicolon/);
  assertInvalid(["--agent-identifiers=host=%zz"], "agent-identifiers", /invalid URL escape "%zz"/);
});

Deno.test("agentIdentifiersProblem() decodes keys like url.ParseQuery", () => {
  assert.equal(agentIdentifiersProblem(""), undefined);
  assert.equal(agentIdentifiersProblem("&&host=a&"), undefined);
  assert.equal(agentIdentifiersProblem("ho%73t=a"), undefined);
  assert.equal(agentIdentifiersProblem("default-route"), undefined);
  assert.equal(agentIdentifiersProblem("ho+st=a"), "unknown address type: ho st");
  assert.equal(agentIdentifiersProblem("=a"), "unknown address type: ");
});

Deno.test("validateAgentOptions() checks --server-count-source", () => {
  for (const ok of ["", "default", "max"]) {
    validateAgentOptions(options([`--server-count-source=${ok}`]));
  }
  assertInvalid(["--server-count-source=min"], "server-count-source", /'', 'default', 'max'/);
});

Deno.test("validateAgentOptions() checks selectors and log format on programmatic options", () => {
  const base = options([]);
  assert.throws(
    () => validateAgentOptions({ ...base, leaseLabelSelector: "a in ()" }),
    /^KnpError: --lease-label-selector: /,
  );
  assert.throws(
    () => validateAgentOptions({ ...base, knpLogFormat: "xml" } as unknown as AgentOptions),
    /--knp-log-format/,
  );
});

Deno.test("validateAgentOptions() rejects --agent-identifiers values that cannot match", () => {
  const cases: [string, RegExp][] = [
    ["ipv4=notanip", /ipv4 "notanip" is not an IPv4 address/],
    ["ipv4=10.0.0.256", /ipv4 "10.0.0.256" is not an IPv4 address/],
    ["ipv4=fd00::1", /ipv4 "fd00::1" is not an IPv4 address/],
    ["ipv4=${HOST_IP}", /ipv4 "\$\{HOST_IP\}" is not an IPv4 address \(an unexpanded variable\?\)/],
    ["ipv6=fd00:::1", /ipv6 "fd00:::1" is not an IPv6 address/],
    // Upstream's own test passes this one; it could never match a dial address.
    ["ipv6=:::::", /ipv6 ":::::" is not an IPv6 address/],
    ["ipv6=10.0.0.1", /ipv6 "10.0.0.1" is not an IPv6 address/],
    ["ipv6=1:2:3:4:5:6:7:8:9", /ipv6 "1:2:3:4:5:6:7:8:9" is not an IPv6 address/],
    ["cidr=10.0.0.0/99", /cidr "10.0.0.0\/99" is not an address\/prefix-length/],
    ["cidr=10.0.0.0", /cidr "10.0.0.0" is not an address\/prefix-length/],
    ["cidr=fd00::/129", /cidr "fd00::\/129" is not an address\/prefix-length/],
    ["cidr=x/8", /cidr "x\/8" is not an address\/prefix-length/],
    ["host=", /host "" is not a host name/],
    ["host=a b", /host "a b" is not a host name/],
    ["default-route=yes", /default-route "yes" is not a boolean/],
  ];
  for (const [value, message] of cases) {
    assertInvalid([`--agent-identifiers=${value}`], "agent-identifiers", message);
  }
});

Deno.test("agentIdentifiersProblem() accepts every well-formed value", () => {
  for (
    const ok of [
      "ipv4=0.0.0.0&ipv4=255.255.255.255",
      "ipv6=::&ipv6=::1&ipv6=fd00::7&ipv6=1:2:3:4:5:6:7:8&ipv6=::ffff:10.0.0.1",
      "cidr=0.0.0.0/0&cidr=10.0.0.0/32&cidr=fd00::/128&cidr=::/0",
      "host=node1.example.com&host=10.0.0.7",
      "default-route=true&default-route=False&default-route=",
    ]
  ) assert.equal(agentIdentifiersProblem(ok), undefined, ok);
});

Deno.test("validateAgentOptions() requires a positive --knp-http-timeout", () => {
  assert.equal(options(["--knp-http-timeout=3s"]).knpHttpTimeout, 3_000);
  assertInvalid(["--knp-http-timeout=0s"], "knp-http-timeout", /must be > 0/);
});
