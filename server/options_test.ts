import assert from "node:assert/strict";
import { KnpError } from "@knp/core/errors";
import { KLOG_FLAGS } from "@knp/cli/common_flags";
import { emptyFiles, KLOG_DEFAULTS, optionsTester, UUID } from "@knp/testing/options";
import {
  parseLeaseLabels,
  parseServerOptions,
  SERVER_FLAGS,
  serverHelp,
  type ServerOptions,
  validateServerOptions,
} from "./options.ts";
import { parseProxyStrategies } from "./backend_manager.ts";

const { parse, options, assertInvalid } = optionsTester(parseServerOptions, validateServerOptions);

/** Empty files standing in for certificates. */
const { CERT, KEY, CA, KUBECONFIG, MISSING } = emptyFiles("knp-server-options-", {
  CERT: "server.crt",
  KEY: "server.key",
  CA: "ca.crt",
  KUBECONFIG: "kubeconfig",
});

/** Flags that pass validation: a UDS frontend. */
const UDS = ["--uds-name=/tmp/knp-test.sock", "--server-port=0"];
/** Flags that pass validation: a TCP frontend with mTLS. */
const TCP = [`--server-cert=${CERT}`, `--server-key=${KEY}`, `--server-ca-cert=${CA}`];

Deno.test("parseServerOptions() pins every upstream default (knp: backend-dial-timeout 10s)", () => {
  const { options, notImplemented, deprecated } = parse([]);
  const { serverId, ...rest } = options;
  assert.match(serverId, UUID);
  assert.deepEqual(rest, {
    mode: "grpc",
    udsName: "",
    deleteExistingUdsFile: true,
    serverPort: 8090,
    serverBindAddress: "",
    agentPort: 8091,
    agentBindAddress: "",
    serverCert: "",
    serverKey: "",
    serverCaCert: "",
    clusterCert: "",
    clusterKey: "",
    clusterCaCert: "",
    cipherSuites: [],
    tlsMinVersion: "",
    agentNamespace: "",
    agentServiceAccount: "",
    authenticationAudience: "",
    kubeconfig: "",
    kubeconfigQps: 0,
    kubeconfigBurst: 0,
    kubeApiContentType: "application/vnd.kubernetes.protobuf",
    proxyStrategies: "default",
    serverCount: 1,
    enableLeaseController: false,
    leaseNamespace: "kube-system",
    leaseLabel: "k8s-app=konnectivity-server",
    keepaliveTime: 3_600_000,
    frontendKeepaliveTime: 3_600_000,
    xfrChannelSize: 10,
    backendDialTimeout: 10_000,
    gracefulShutdownTimeout: 0,
    warnOnChannelLimit: true,
    healthPort: 8092,
    healthBindAddress: "",
    adminPort: 8095,
    adminBindAddress: "127.0.0.1",
    enableProfiling: false,
    enableContentionProfiling: false,
    knpLogFormat: "json",
    knpHttpTimeout: 10_000,
    knpFrontendIdleTimeout: 60_000,
    knpGrpcTransport: "native",
    knpFastLink: true,
    knpMaxPendingDials: 10_000,
    knpWebsocketPort: 0,
    knpMaxPendingDialsPerFrontend: 1_000,
    knpMaxConnectionsPerAgent: 10_000,
    knpAgentConnectRate: 100,
    knpAgentConnectBurst: 200,
    knpMaxMessageSize: 4 * 1024 * 1024 + 1024,
    knpTunnelIdleTimeout: 0,
    knpPausedTunnelTimeout: 300_000,
    knpDestinationAllow: [],
    knpDestinationDeny: [],
    knpDestinationDenySelf: true,
    knpDestinationSelfAddresses: [],
    knpAgentBinding: "owner",
    knpLeaseDuration: 30_000,
    knpLeaseRenewInterval: 15_000,
    knpLeaseGcInterval: 15_000,
    knpDirectDestinations: [],
    knpZoneCidrs: [],
    knpExplainDials: 1000,
    knpPrintPermissions: false,
    // klog
    ...KLOG_DEFAULTS,
  });
  assert.deepEqual(notImplemented, []);
  assert.deepEqual(deprecated, []);
});

Deno.test("parseServerOptions() generates a fresh server ID per parse", () => {
  assert.notEqual(parse([]).options.serverId, parse([]).options.serverId);
});

Deno.test("parseServerOptions() takes the server ID from PROXY_SERVER_ID; the flag wins", () => {
  assert.equal(parse([], { PROXY_SERVER_ID: "env-id" }).options.serverId, "env-id");
  assert.equal(
    parse(["--server-id=flag-id"], { PROXY_SERVER_ID: "env-id" }).options.serverId,
    "flag-id",
  );
  assert.match(parse([], { PROXY_SERVER_ID: "" }).options.serverId, UUID);
});

Deno.test("SERVER_FLAGS covers every upstream server flag with upstream spelling", () => {
  const upstream = [
    "mode",
    "uds-name",
    "delete-existing-uds-file",
    "server-port",
    "server-bind-address",
    "agent-port",
    "agent-bind-address",
    "server-cert",
    "server-key",
    "server-ca-cert",
    "cluster-cert",
    "cluster-key",
    "cluster-ca-cert",
    "cipher-suites",
    "tls-min-version",
    "agent-namespace",
    "agent-service-account",
    "authentication-audience",
    "kubeconfig",
    "kubeconfig-qps",
    "kubeconfig-burst",
    "kube-api-content-type",
    "proxy-strategies",
    "server-id",
    "server-count",
    "enable-lease-controller",
    "lease-namespace",
    "lease-label",
    "keepalive-time",
    "frontend-keepalive-time",
    "xfr-channel-size",
    "backend-dial-timeout",
    "graceful-shutdown-timeout",
    "warn-on-channel-limit",
    "health-port",
    "health-bind-address",
    "admin-port",
    "admin-bind-address",
    "enable-profiling",
    "enable-contention-profiling",
    // klog
    "log-dir",
    "log-file",
    "log-file-max-size",
    "logtostderr",
    "alsologtostderr",
    "legacy-stderr-threshold-behavior",
    "v",
    "add-dir-header",
    "skip-headers",
    "one-output",
    "skip-log-headers",
    "stderrthreshold",
    "alsologtostderrthreshold",
    "vmodule",
    "log-backtrace-at",
  ];
  const names = SERVER_FLAGS.map((spec) => spec.name);
  assert.deepEqual(names.filter((name) => !upstream.includes(name)), [
    "knp-log-format",
    "knp-http-timeout",
    "knp-frontend-idle-timeout",
    "knp-max-pending-dials",
    "knp-websocket-port",
    "knp-max-pending-dials-per-frontend",
    "knp-max-connections-per-agent",
    "knp-agent-connect-rate",
    "knp-agent-connect-burst",
    "knp-tunnel-idle-timeout",
    "knp-paused-tunnel-timeout",
    "knp-max-message-size",
    "knp-destination-allow",
    "knp-destination-deny",
    "knp-destination-deny-self",
    "knp-destination-self-addresses",
    "knp-agent-binding",
    "knp-lease-duration",
    "knp-lease-renew-interval",
    "knp-lease-gc-interval",
    "knp-direct-destinations",
    "knp-zone-cidrs",
    "knp-explain-dials",
    "knp-grpc-transport",
    "knp-fast-link",
    "knp-print-permissions",
  ]);
  assert.deepEqual(upstream.filter((name) => !names.includes(name)), []);
});

Deno.test("SERVER_FLAGS marks exactly the planned flags as not implemented", () => {
  const klog = new Set(KLOG_FLAGS.map((spec) => spec.name));
  const notImplemented = SERVER_FLAGS.filter((spec) => spec.implemented !== true)
    .map((spec) => spec.name)
    .filter((name) => !klog.has(name));
  assert.deepEqual(notImplemented, [
    "cipher-suites",
    "kube-api-content-type",
    "xfr-channel-size",
    "enable-profiling",
    "enable-contention-profiling",
  ]);
});

Deno.test("parseServerOptions() parses every flag syntax used in manifests", () => {
  const { options } = parse([
    "--mode=http-connect",
    "--uds-name",
    "/etc/kubernetes/konnectivity-server/konnectivity-server.socket",
    "--delete-existing-uds-file=false",
    "--server-port=0",
    "--agent-port=8132",
    "--admin-port=8133",
    "--health-port=8134",
    "--agent-bind-address=0.0.0.0",
    `--cluster-cert=${CERT}`,
    `--cluster-key=${KEY}`,
    "--keepalive-time=30s",
    "--frontend-keepalive-time=1h0m0s",
    "--proxy-strategies=destHost,default",
    "--server-count=3",
    "--xfr-channel-size=20",
    "--backend-dial-timeout=0",
    "--graceful-shutdown-timeout=15s",
    "--kubeconfig-qps=2.5",
    "--cipher-suites=TLS_AES_128_GCM_SHA256",
    "--cipher-suites=TLS_AES_256_GCM_SHA384",
    "--knp-log-format=text",
    "--v=5",
  ]);
  assert.equal(options.mode, "http-connect");
  assert.equal(options.udsName, "/etc/kubernetes/konnectivity-server/konnectivity-server.socket");
  assert.equal(options.deleteExistingUdsFile, false);
  assert.equal(options.serverPort, 0);
  assert.equal(options.agentPort, 8132);
  assert.equal(options.keepaliveTime, 30_000);
  assert.equal(options.proxyStrategies, "destHost,default");
  assert.equal(options.serverCount, 3);
  assert.equal(options.backendDialTimeout, 0);
  assert.equal(options.gracefulShutdownTimeout, 15_000);
  assert.equal(options.kubeconfigQps, 2.5);
  assert.deepEqual(options.cipherSuites, ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"]);
  assert.equal(options.knpLogFormat, "text");
  assert.equal(options.v, 5);
  assert.deepEqual(validateServerOptions(options), []);
});

Deno.test("parseServerOptions() reports given unimplemented flags; http-connect is implemented", () => {
  const { notImplemented } = parse([
    "--mode=http-connect",
    "--enable-lease-controller",
    "--kubeconfig-qps=5",
    "--kube-api-content-type=application/json",
    "--server-port=1",
  ]);
  assert.deepEqual(notImplemented, [
    "flag --kube-api-content-type is accepted but not supported (the Kubernetes client, " +
    "@kubernetes/client-node, speaks JSON only); it has no effect",
  ]);
  assert.deepEqual(parse(["--mode=grpc", "--enable-profiling=false"]).notImplemented, []);
  assert.equal(parse(["--knp-max-pending-dials=0"]).options.knpMaxPendingDials, 0);
});

Deno.test("parseServerOptions() reports the deprecated --warn-on-channel-limit", () => {
  const result = parse(["--warn-on-channel-limit=false"]);
  assert.equal(result.deprecated.length, 1);
  assert.match(result.deprecated[0]!, /^flag --warn-on-channel-limit has been deprecated/);
  assert.deepEqual(result.notImplemented, []);
});

Deno.test("parseServerOptions() returns { help: true } and serverHelp() lists the flags", () => {
  assert.deepEqual(parseServerOptions(["--help"], {}), { help: true });
  assert.deepEqual(parseServerOptions(["-h"], {}), { help: true });
  const help = serverHelp();
  assert.match(help, /^Usage of proxy-server:\n/);
  assert.match(
    help,
    /--keepalive-time duration +gRPC keepalive time on agent connections\. \(default 1h0m0s\)/,
  );
  assert.match(help, /--backend-dial-timeout duration .*knp defaults to 10s.*\(default 10s\)/);
  assert.match(help, /--server-id string .*\(default \$PROXY_SERVER_ID, else a random UUID\)/);
  assert.match(help, /--enable-lease-controller +Publish this server's Lease/);
  assert.doesNotMatch(help, /--enable-lease-controller .*not implemented/);
  assert.match(help, /--knp-lease-duration duration .*\(default 30s\)/);
  assert.match(help, /--knp-log-format string .*\(default "json"\)/);
  assert.match(help, /-v, --v int /);
  assert.doesNotMatch(help, /warn-on-channel-limit/);
});

Deno.test("parseServerOptions() names the flag in parse errors", () => {
  assert.throws(
    () => parseServerOptions(["--server-port=abc"], {}),
    (err: unknown) =>
      err instanceof KnpError && err.code === "INVALID_FLAG" &&
      err.message.startsWith('invalid argument "abc" for "--server-port" flag: '),
  );
  assert.throws(() => parseServerOptions(["--foo"], {}), /^KnpError: unknown flag: --foo$/);
  assert.throws(
    () => parseServerOptions(["--keepalive-time=5"], {}),
    /for "--keepalive-time" flag: missing unit/,
  );
});

Deno.test("validateServerOptions() accepts UDS and TCP setups", () => {
  assert.deepEqual(validateServerOptions(options(UDS)), []);
  assert.deepEqual(validateServerOptions(options(TCP)), []);
  assert.deepEqual(
    validateServerOptions(options([...TCP, `--cluster-cert=${CERT}`, `--cluster-key=${KEY}`])),
    [],
  );
});

Deno.test("validateServerOptions() requires cert/key pairs and existing files", () => {
  assertInvalid([...UDS, `--cluster-key=${KEY}`], "cluster-cert");
  assertInvalid([...UDS, `--cluster-cert=${CERT}`], "cluster-key");
  assertInvalid(
    [...UDS, `--cluster-cert=${MISSING}`, `--cluster-key=${KEY}`],
    "cluster-cert",
    /does not exist/,
  );
  assertInvalid(
    [...UDS, `--cluster-cert=${CERT}`, `--cluster-key=${MISSING}`],
    "cluster-key",
    /does not exist/,
  );
  assertInvalid([...UDS, `--cluster-ca-cert=${MISSING}`], "cluster-ca-cert", /does not exist/);
  assertInvalid([`--server-key=${KEY}`, `--server-ca-cert=${CA}`], "server-cert");
  assertInvalid([`--server-cert=${CERT}`, `--server-ca-cert=${CA}`], "server-key");
  assertInvalid(
    [`--server-cert=${MISSING}`, `--server-key=${KEY}`, `--server-ca-cert=${CA}`],
    "server-cert",
  );
  assertInvalid(
    [`--server-cert=${CERT}`, `--server-key=${MISSING}`, `--server-ca-cert=${CA}`],
    "server-key",
  );
  assertInvalid([`--server-ca-cert=${MISSING}`], "server-ca-cert", /does not exist/);
});

Deno.test("validateServerOptions() checks --mode", () => {
  assertInvalid([...UDS, "--mode=http"], "mode", /"grpc" or "http-connect", got "http"/);
  validateServerOptions(options([...UDS, "--mode=http-connect"]));
});

Deno.test("validateServerOptions() applies the UDS rules", () => {
  assertInvalid(
    ["--uds-name=/tmp/x.sock"],
    "server-port",
    /must be 0 when --uds-name is set, got 8090/,
  );
  assertInvalid([...UDS, `--server-cert=${CERT}`, `--server-key=${KEY}`], "server-key");
  assertInvalid([...UDS, `--server-ca-cert=${CA}`], "server-ca-cert");
});

Deno.test("validateServerOptions() requires --server-ca-cert in TCP mode", () => {
  assertInvalid([], "server-ca-cert", /required/);
  assertInvalid([`--server-cert=${CERT}`, `--server-key=${KEY}`], "server-ca-cert", /required/);
});

Deno.test("validateServerOptions() rejects ephemeral and reserved ports", () => {
  for (
    const [flag, what] of [
      ["server-port", "server"],
      ["agent-port", "agent"],
      ["admin-port", "admin"],
      ["health-port", "health"],
    ]
  ) {
    assertInvalid(
      [...TCP, `--${flag}=49152`],
      flag!,
      new RegExp(`please do not try to use ephemeral port 49152 for the ${what} port`),
    );
    assertInvalid(
      [...TCP, `--${flag}=1023`],
      flag!,
      new RegExp(`please do not try to use reserved port 1023 for the ${what} port`),
    );
    validateServerOptions(options([...TCP, `--${flag}=49151`]));
    validateServerOptions(options([...TCP, `--${flag}=1024`]));
  }
  // Only with a UDS may the server port be below 1024 (it must then be 0).
  validateServerOptions(options(UDS));
  // knp extension: 0 means any free port (reported by the binary once bound).
  validateServerOptions(options([...UDS, "--agent-port=0", "--health-port=0", "--admin-port=0"]));
});

Deno.test("validateServerOptions() requires --enable-profiling for contention profiling", () => {
  assertInvalid([...UDS, "--enable-contention-profiling"], "enable-contention-profiling");
  assertInvalid([...UDS, "--enable-contention-profiling"], "enable-profiling");
  validateServerOptions(options([...UDS, "--enable-contention-profiling", "--enable-profiling"]));
});

Deno.test("validateServerOptions() requires the token-auth trio together, without mTLS", () => {
  const trio = [
    "--agent-namespace=kube-system",
    "--agent-service-account=konnectivity-agent",
    "--authentication-audience=system:konnectivity-server",
  ];
  validateServerOptions(options([...UDS, ...trio]));
  assertInvalid([...UDS, trio[0]!], "agent-service-account", /required for agent token auth/);
  assertInvalid([...UDS, trio[1]!], "agent-namespace");
  assertInvalid([...UDS, trio[2]!], "agent-namespace");
  assertInvalid([...UDS, trio[0]!, trio[1]!], "authentication-audience");
  assertInvalid([...UDS, ...trio, `--cluster-ca-cert=${CA}`], "cluster-ca-cert", /token auth/);
});

Deno.test("validateServerOptions() requires an existing --kubeconfig", () => {
  validateServerOptions(options([...UDS, `--kubeconfig=${KUBECONFIG}`]));
  assertInvalid([...UDS, `--kubeconfig=${MISSING}`], "kubeconfig", /does not exist/);
});

Deno.test("validateServerOptions() checks --proxy-strategies", () => {
  validateServerOptions(options([...UDS, "--proxy-strategies=destHost,defaultRoute,default"]));
  validateServerOptions(options([...UDS, "--proxy-strategies=,destHost,,"]));
  assertInvalid(
    [...UDS, "--proxy-strategies=random"],
    "proxy-strategies",
    /unknown proxy strategy: random$/,
  );
  assertInvalid(
    [...UDS, "--proxy-strategies=desthost"],
    "proxy-strategies",
    /unknown proxy strategy/,
  );
  assertInvalid(
    [...UDS, "--proxy-strategies="],
    "proxy-strategies",
    /proxy strategies cannot be empty$/,
  );
  assertInvalid([...UDS, "--proxy-strategies=,,"], "proxy-strategies", /cannot be empty/);
});

Deno.test("parseProxyStrategies() returns strategies in order, skipping empty items", () => {
  assert.deepEqual(parseProxyStrategies("default"), ["default"]);
  assert.deepEqual(parseProxyStrategies("destHost,,defaultRoute,default,"), [
    "destHost",
    "defaultRoute",
    "default",
  ]);
});

Deno.test("validateServerOptions() requires --xfr-channel-size > 0", () => {
  assertInvalid([...UDS, "--xfr-channel-size=0"], "xfr-channel-size", /greater than 0, got 0/);
  assertInvalid([...UDS, "--knp-max-pending-dials=0"], "knp-max-pending-dials", /at least 1/);
  assertInvalid([...UDS, "--knp-websocket-port=60000"], "knp-websocket-port", /ephemeral port/);
  assertInvalid([...UDS, "--xfr-channel-size=-1"], "xfr-channel-size");
  validateServerOptions(options([...UDS, "--xfr-channel-size=1"]));
});

Deno.test("validateServerOptions() checks --tls-min-version and warns below TLS 1.2", () => {
  assertInvalid(
    [...UDS, "--tls-min-version=TLS12"],
    "tls-min-version",
    /unsupported TLS version "TLS12"/,
  );
  assert.deepEqual(validateServerOptions(options([...UDS, "--tls-min-version=VersionTLS12"])), []);
  assert.deepEqual(validateServerOptions(options([...UDS, "--tls-min-version=VersionTLS13"])), []);
  const warnings = validateServerOptions(options([...UDS, "--tls-min-version=VersionTLS10"]));
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /--tls-min-version=VersionTLS10 is below TLS 1\.2/);
  assert.equal(
    validateServerOptions(options([...UDS, "--tls-min-version=VersionTLS11"])).length,
    1,
  );
});

Deno.test("validateServerOptions() accepts only secure Go cipher-suite names", () => {
  validateServerOptions(
    options([
      ...UDS,
      "--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_AES_128_GCM_SHA256",
    ]),
  );
  assertInvalid(
    [...UDS, "--cipher-suites=TLS_RSA_WITH_AES_128_GCM_SHA256"],
    "cipher-suites",
    /insecure/,
  );
  assertInvalid([...UDS, "--cipher-suites=NOPE"], "cipher-suites");
});

Deno.test("validateServerOptions() checks --lease-label only with the lease controller", () => {
  validateServerOptions(options([...UDS, "--lease-label=bad"]));
  validateServerOptions(options([...UDS, "--enable-lease-controller", "--lease-label=a=b, c = d"]));
  assertInvalid([...UDS, "--enable-lease-controller", "--lease-label=bad"], "lease-label", /"bad"/);
  assertInvalid([...UDS, "--enable-lease-controller", "--lease-label="], "lease-label", /empty/);
  assertInvalid([...UDS, "--enable-lease-controller", "--lease-label=a=b=c"], "lease-label");
});

Deno.test("parseLeaseLabels() trims keys and values", () => {
  assert.deepEqual(parseLeaseLabels("k8s-app=konnectivity-server"), {
    "k8s-app": "konnectivity-server",
  });
  assert.deepEqual(parseLeaseLabels(" a = 1 ,b=2"), { a: "1", b: "2" });
});

Deno.test("validateServerOptions() rejects negative timeouts; 0 is allowed", () => {
  assertInvalid(
    [...UDS, "--graceful-shutdown-timeout=-1s"],
    "graceful-shutdown-timeout",
    />= 0, got -1s/,
  );
  assertInvalid([...UDS, "--backend-dial-timeout=-5ms"], "backend-dial-timeout", />= 0, got -5ms/);
  validateServerOptions(
    options([...UDS, "--graceful-shutdown-timeout=0", "--backend-dial-timeout=0s"]),
  );
});

Deno.test("validateServerOptions() checks --knp-log-format on programmatic options", () => {
  const o = { ...options(UDS), knpLogFormat: "xml" } as unknown as ServerOptions;
  assert.throws(() => validateServerOptions(o), /--knp-log-format/);
  assert.throws(
    () => parseServerOptions(["--knp-log-format=xml"], {}),
    /invalid argument "xml" for "--knp-log-format" flag/,
  );
});

Deno.test("validateServerOptions() requires positive --knp-http-timeout and --knp-frontend-idle-timeout", () => {
  assert.equal(options(["--knp-http-timeout=2s"]).knpHttpTimeout, 2_000);
  assert.equal(options(["--knp-frontend-idle-timeout=90s"]).knpFrontendIdleTimeout, 90_000);
  assertInvalid(["--knp-http-timeout=0s"], "knp-http-timeout", /must be > 0/);
  assertInvalid(["--knp-frontend-idle-timeout=0s"], "knp-frontend-idle-timeout", /must be > 0/);
});
