import assert from "node:assert/strict";
import { KnpError } from "@knp/core/errors";
import { camelCaseFlagName, type FlagSpec, type ParsedFlags, parseFlags } from "./flags.ts";
import {
  parseGoBool,
  parseGoFloat,
  parseGoInt,
  parseStringSlice,
  splitCsvRecord,
} from "./flag_values.ts";
import { formatHelp } from "./flag_help.ts";
import { requireExistingFile } from "./flag_checks.ts";
import { KLOG_FLAGS, KNP_LOG_FORMAT_FLAG } from "./common_flags.ts";
import { KLOG_DEFAULTS } from "@knp/testing/options";

const SPECS: FlagSpec[] = [
  { name: "server-port", type: "int", default: 8090, help: "Port.", implemented: true },
  { name: "sync-forever", type: "bool", default: false, help: "Forever.", implemented: true },
  { name: "alpn-proto", type: "stringSlice", default: [], help: "ALPN.", implemented: true },
  { name: "cs", type: "stringSlice", default: ["x"], help: "Suites.", implemented: true },
  {
    name: "keepalive-time",
    type: "duration",
    default: 3_600_000,
    help: "Keepalive.",
    implemented: true,
  },
  { name: "qps", type: "float", default: 0, help: "QPS.", implemented: false },
  {
    name: "server-id",
    type: "string",
    default: () => "generated",
    env: "PROXY_SERVER_ID",
    help: "ID.",
    implemented: true,
  },
  {
    name: "enable-lease-controller",
    type: "bool",
    default: false,
    help: "Leases.",
    implemented: false,
  },
  {
    name: "lease-namespace",
    type: "string",
    default: "kube-system",
    help: "Namespace.",
    implemented: "not implemented yet (planned)",
  },
  {
    name: "selector",
    type: "string",
    default: "a=b",
    help: "Selector.",
    implemented: false,
    check: (value) => (String(value).includes("=") ? undefined : "expected k=v"),
  },
  {
    name: "old-selector",
    type: "string",
    default: "a=b",
    help: "Old.",
    implemented: false,
    alias: "selector",
    hidden: true,
    deprecated: "use --selector instead",
  },
  {
    name: "warn",
    type: "bool",
    default: true,
    help: "Warn.",
    implemented: true,
    hidden: true,
    deprecated: "it does nothing",
  },
  { name: "v", short: "v", type: "int", default: 4, help: "Verbosity.", implemented: true },
];

function parse(args: string[], env: Record<string, string | undefined> = {}): ParsedFlags {
  const result = parseFlags(SPECS, args, { env });
  assert.ok(!("help" in result), "unexpected help result");
  return result;
}

function assertInvalid(fn: () => unknown, message: string | RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof KnpError, `expected KnpError, got ${err}`);
    assert.equal(err.code, "INVALID_FLAG");
    assert.ok(!err.message.includes("\n"), "message must be one line");
    if (typeof message === "string") assert.equal(err.message, message);
    else assert.match(err.message, message);
    return true;
  });
}

Deno.test("parseFlags() returns every default when no arguments are given", () => {
  const result = parse([]);
  assert.deepEqual(result.values, {
    serverPort: 8090,
    syncForever: false,
    alpnProto: [],
    cs: ["x"],
    keepaliveTime: 3_600_000,
    qps: 0,
    serverId: "generated",
    enableLeaseController: false,
    leaseNamespace: "kube-system",
    selector: "a=b",
    warn: true,
    v: 4,
  });
  assert.equal(result.set.size, 0);
  assert.deepEqual(result.notImplemented, []);
  assert.deepEqual(result.deprecated, []);
});

Deno.test("parseFlags() does not share default arrays between parses", () => {
  const first = parse([]);
  (first.values.cs as string[]).push("mutated");
  assert.deepEqual(parse([]).values.cs, ["x"]);
});

Deno.test("parseFlags() accepts --name=value and --name value", () => {
  assert.equal(parse(["--server-port=9000"]).values.serverPort, 9000);
  assert.equal(parse(["--server-port", "9001"]).values.serverPort, 9001);
  assert.equal(parse(["--server-id", "--foo"]).values.serverId, "--foo");
  assert.equal(parse(["--server-id="]).values.serverId, "");
  assert.equal(parse(["--server-id=a=b"]).values.serverId, "a=b");
  assert.deepEqual([...parse(["--server-port=1", "--qps=2"]).set], ["server-port", "qps"]);
});

Deno.test("parseFlags() treats a bare boolean as true and parses Go booleans", () => {
  assert.equal(parse(["--sync-forever"]).values.syncForever, true);
  assert.equal(parse(["--warn=false"]).values.warn, false);
  for (const word of ["1", "t", "T", "true", "TRUE", "True"]) {
    assert.equal(parse([`--sync-forever=${word}`]).values.syncForever, true, word);
  }
  for (const word of ["0", "f", "F", "false", "FALSE", "False"]) {
    assert.equal(parse([`--sync-forever=${word}`]).values.syncForever, false, word);
  }
  assertInvalid(
    () => parse(["--sync-forever=yes"]),
    /^invalid argument "yes" for "--sync-forever" flag: /,
  );
});

Deno.test("parseFlags() does not let a bare boolean consume the next argument", () => {
  // pflag leaves "true" as a positional argument; knp rejects positional arguments.
  assertInvalid(() => parse(["--sync-forever", "true"]), /unexpected argument "true"/);
});

Deno.test("parseFlags() parses integers like Go's ParseInt with base 0", () => {
  assert.equal(parse(["--server-port=0x10"]).values.serverPort, 16);
  assert.equal(parse(["--server-port=010"]).values.serverPort, 8);
  assert.equal(parse(["--server-port=0o17"]).values.serverPort, 15);
  assert.equal(parse(["--server-port=0b101"]).values.serverPort, 5);
  assert.equal(parse(["--server-port=1_000"]).values.serverPort, 1000);
  assert.equal(parse(["--server-port=+5"]).values.serverPort, 5);
  assert.equal(parse(["--server-port=-1"]).values.serverPort, -1);
  assert.equal(parse(["--server-port=0"]).values.serverPort, 0);
  assertInvalid(
    () => parse(["--server-port=abc"]),
    /^invalid argument "abc" for "--server-port" flag: /,
  );
  for (const bad of [" 5", "5 ", "1.5", "08", "1__0", "_1", "1_", "", "0x", "9007199254740993"]) {
    assertInvalid(() => parse([`--server-port=${bad}`]), /for "--server-port" flag/);
  }
});

Deno.test("parseGoInt(), parseGoFloat(), parseGoBool() helpers", () => {
  assert.equal(parseGoInt("0x_1F"), 31);
  assert.equal(parseGoInt("0_17"), 15);
  assert.equal(parseGoInt("-0x10"), -16);
  assert.throws(() => parseGoInt("0x_"), SyntaxError);
  assert.equal(parseGoFloat("1.5"), 1.5);
  assert.equal(parseGoFloat("1e2"), 100);
  assert.equal(parseGoFloat(".5"), 0.5);
  assert.equal(parseGoFloat("-inf"), -Infinity);
  assert.throws(() => parseGoFloat("abc"), SyntaxError);
  assert.throws(() => parseGoFloat("1e"), SyntaxError);
  assert.equal(parseGoBool("T"), true);
  assert.throws(() => parseGoBool("yes"), SyntaxError);
});

Deno.test("parseFlags() parses float flags", () => {
  assert.equal(parse(["--qps=1.5"]).values.qps, 1.5);
  assert.equal(parse(["--qps", "1e2"]).values.qps, 100);
  assertInvalid(() => parse(["--qps=abc"]), /^invalid argument "abc" for "--qps" flag: /);
});

Deno.test("parseFlags() parses Go durations into milliseconds", () => {
  assert.equal(parse(["--keepalive-time=1h0m0s"]).values.keepaliveTime, 3_600_000);
  assert.equal(parse(["--keepalive-time=100ms"]).values.keepaliveTime, 100);
  assert.equal(parse(["--keepalive-time", "1.5s"]).values.keepaliveTime, 1_500);
  assert.equal(parse(["--keepalive-time=0"]).values.keepaliveTime, 0);
  assert.equal(parse(["--keepalive-time=300us"]).values.keepaliveTime, 0.3);
  assertInvalid(
    () => parse(["--keepalive-time=1"]),
    'invalid argument "1" for "--keepalive-time" flag: missing unit in duration "1"',
  );
  assertInvalid(
    () => parse(["--keepalive-time=abc"]),
    'invalid argument "abc" for "--keepalive-time" flag: invalid duration "abc"',
  );
});

Deno.test("parseFlags() splits string slices on commas, honouring CSV quotes", () => {
  assert.deepEqual(parse(["--alpn-proto=h2,http/1.1"]).values.alpnProto, ["h2", "http/1.1"]);
  assert.deepEqual(parse(["--alpn-proto", "a"]).values.alpnProto, ["a"]);
  assert.deepEqual(parse(['--alpn-proto="a,b",c']).values.alpnProto, ["a,b", "c"]);
  assert.deepEqual(parse(["--alpn-proto=a,,b"]).values.alpnProto, ["a", "", "b"]);
  assertInvalid(() => parse(['--alpn-proto="a']), /for "--alpn-proto" flag: unterminated quote/);
});

Deno.test('parseFlags() treats "" and "[]" as an empty slice', () => {
  assert.deepEqual(parse(["--alpn-proto=[]"]).values.alpnProto, []);
  assert.deepEqual(parse(["--alpn-proto="]).values.alpnProto, []);
  assert.deepEqual(parse(["--cs="]).values.cs, []);
  assert.deepEqual(parse(["--cs=[]"]).values.cs, []);
  assert.deepEqual(parse(["--cs=[a,b]"]).values.cs, ["a", "b"]);
  assert.ok(parse(["--alpn-proto=[]"]).set.has("alpn-proto"));
});

Deno.test("parseFlags() replaces a slice default on first use and appends afterwards", () => {
  assert.deepEqual(parse(["--cs=a", "--cs=b"]).values.cs, ["a", "b"]);
  assert.deepEqual(parse(["--cs=a,b", "--cs", "c"]).values.cs, ["a", "b", "c"]);
  assert.deepEqual(
    parse(["--alpn-proto=", "--alpn-proto=a,b", "--alpn-proto", "c"]).values.alpnProto,
    ["a", "b", "c"],
  );
  assert.deepEqual(parse(["--cs=a", "--cs=[]"]).values.cs, ["a"]);
});

Deno.test("parseFlags() accepts shorthands -v=4, -v 4 and -v4", () => {
  assert.equal(parse(["-v=5"]).values.v, 5);
  assert.equal(parse(["-v", "6"]).values.v, 6);
  assert.equal(parse(["-v7"]).values.v, 7);
  assert.equal(parse(["--v=1"]).values.v, 1);
  assert.equal(parse(["--v", "2"]).values.v, 2);
  assertInvalid(() => parse(["-v"]), "flag needs an argument: 'v' in -v");
  assertInvalid(() => parse(["-vx"]), /^invalid argument "x" for "-v" flag: /);
  assertInvalid(() => parse(["-x"]), "unknown shorthand flag: 'x' in -x");
});

Deno.test("parseFlags() rejects single-dash long names like pflag", () => {
  assertInvalid(() => parse(["-server-port=5"]), "unknown shorthand flag: 's' in -server-port=5");
});

Deno.test("parseFlags() rejects unknown flags, bad syntax and missing values", () => {
  assertInvalid(() => parse(["--foo"]), "unknown flag: --foo");
  assertInvalid(() => parse(["--foo=bar"]), "unknown flag: --foo");
  assertInvalid(() => parse(["---foo"]), "bad flag syntax: ---foo");
  assertInvalid(() => parse(["--=x"]), "bad flag syntax: --=x");
  assertInvalid(() => parse(["--server-port"]), "flag needs an argument: --server-port");
});

Deno.test("parseFlags() rejects positional arguments, also after --", () => {
  assertInvalid(() => parse(["extra"]), /^unexpected argument "extra"/);
  assertInvalid(() => parse(["-"]), /^unexpected argument "-"/);
  assertInvalid(() => parse(["--", "--foo"]), /^unexpected argument "--foo"/);
  assert.equal(parse(["--server-port=1", "--"]).values.serverPort, 1);
});

Deno.test("parseFlags() stops parsing at -- so later flags are not applied", () => {
  assertInvalid(() => parse(["--", "--server-port=2"]), /unexpected argument "--server-port=2"/);
});

Deno.test("parseFlags() returns { help: true } for --help and -h", () => {
  assert.deepEqual(parseFlags(SPECS, ["--help"]), { help: true });
  assert.deepEqual(parseFlags(SPECS, ["-h"]), { help: true });
  assert.deepEqual(parseFlags(SPECS, ["--server-port=1", "--help", "--unknown"]), { help: true });
  assert.deepEqual(parseFlags(SPECS, ["--help=true"]), { help: true });
  assert.ok(!("help" in parseFlags(SPECS, ["--help=false"])));
  // A value-taking flag consumes "--help" as its value, as in pflag.
  assert.equal(parse(["--server-id", "--help"]).values.serverId, "--help");
});

Deno.test("parseFlags() uses the env fallback only when the flag is absent", () => {
  assert.equal(parse([], { PROXY_SERVER_ID: "from-env" }).values.serverId, "from-env");
  assert.equal(parse([], { PROXY_SERVER_ID: "" }).values.serverId, "generated");
  assert.equal(
    parse(["--server-id=from-flag"], { PROXY_SERVER_ID: "from-env" }).values.serverId,
    "from-flag",
  );
  assert.ok(!parse([], { PROXY_SERVER_ID: "from-env" }).set.has("server-id"));
});

Deno.test("parseFlags() reports explicitly given unimplemented flags whose value differs", () => {
  assert.deepEqual(parse(["--enable-lease-controller"]).notImplemented, [
    "flag --enable-lease-controller is accepted but not implemented yet; it has no effect",
  ]);
  assert.deepEqual(parse(["--lease-namespace=other"]).notImplemented, [
    "flag --lease-namespace is accepted but not implemented yet (planned); it has no effect",
  ]);
  // Giving an unimplemented flag its default value changes nothing, so nothing is reported.
  assert.deepEqual(
    parse(["--enable-lease-controller=false", "--lease-namespace=kube-system", "--qps=0"])
      .notImplemented,
    [],
  );
  assert.deepEqual(parse(["--server-port=1"]).notImplemented, []);
  assert.deepEqual(parse([]).notImplemented, []);
  // Reported once even when given twice.
  assert.equal(parse(["--qps=1", "--qps=2"]).notImplemented.length, 1);
});

Deno.test("parseFlags() reports deprecated flags and writes aliases to their target", () => {
  const result = parse(["--old-selector=k=v", "--warn=false"]);
  assert.equal(result.values.selector, "k=v");
  assert.ok(!("oldSelector" in result.values));
  assert.ok(result.set.has("old-selector") && result.set.has("selector"));
  assert.deepEqual(result.deprecated, [
    "flag --old-selector has been deprecated: use --selector instead",
    "flag --warn has been deprecated: it does nothing",
  ]);
  assert.deepEqual(result.notImplemented, [
    "flag --old-selector is accepted but not implemented yet; it has no effect",
  ]);
  assert.deepEqual(parse(["--old-selector=a=b"]).notImplemented, []);
});

Deno.test("parseFlags() runs a spec's check on given values, also through an alias", () => {
  assertInvalid(
    () => parse(["--selector=bad"]),
    'invalid argument "bad" for "--selector" flag: expected k=v',
  );
  assertInvalid(
    () => parse(["--old-selector=bad"]),
    'invalid argument "bad" for "--old-selector" flag: expected k=v',
  );
});

Deno.test("parseFlags() rejects spec tables with duplicate names or dangling aliases", () => {
  const port = SPECS[0]!;
  assert.throws(() => parseFlags([port, port], []), TypeError);
  assert.throws(() => parseFlags([{ ...port, name: "x", alias: "nope" }], []), TypeError);
});

Deno.test("camelCaseFlagName() converts kebab-case names", () => {
  assert.equal(camelCaseFlagName("uds-name"), "udsName");
  assert.equal(camelCaseFlagName("server-ca-cert"), "serverCaCert");
  assert.equal(camelCaseFlagName("v"), "v");
  assert.equal(camelCaseFlagName("log-file-max-size"), "logFileMaxSize");
});

Deno.test("splitCsvRecord() and parseStringSlice() follow CSV rules", () => {
  assert.deepEqual(splitCsvRecord(""), []);
  assert.deepEqual(splitCsvRecord("a"), ["a"]);
  assert.deepEqual(splitCsvRecord(","), ["", ""]);
  assert.deepEqual(splitCsvRecord('"a""b",c'), ['a"b', "c"]);
  assert.throws(() => splitCsvRecord('"a"b'), SyntaxError);
  assert.throws(() => splitCsvRecord('a"b'), SyntaxError);
  assert.deepEqual(parseStringSlice("[]"), []);
  assert.deepEqual(parseStringSlice("[h2]"), ["h2"]);
});

Deno.test("formatHelp() lists visible flags with types and Go-form defaults", () => {
  const help = formatHelp("Usage of test:", SPECS);
  const lines = help.trimEnd().split("\n");
  assert.equal(lines[0], "Usage of test:");
  assert.match(help, /^ {6}--keepalive-time duration {3}Keepalive\. \(default 1h0m0s\)$/m);
  assert.match(help, /^ {6}--server-port int {3,}Port\. \(default 8090\)$/m);
  assert.match(help, /^ {6}--sync-forever {3,}Forever\.$/m);
  assert.match(help, /^ {6}--cs strings {3,}Suites\. \(default \[x\]\)$/m);
  assert.match(help, /^ {6}--alpn-proto strings {3,}ALPN\.$/m);
  assert.match(help, /^ {6}--lease-namespace string {3,}Namespace\. \(default "kube-system"\)/m);
  assert.match(help, /^ {2}-v, --v int {3,}Verbosity\. \(default 4\)$/m);
  assert.match(
    help,
    /--qps float32 {3,}QPS\. \[knp: accepted but not implemented yet; no effect\]$/m,
  );
  assert.match(help, /--lease-namespace .*\[knp: accepted but not implemented yet \(planned\)/);
  assert.doesNotMatch(help, /--warn|--old-selector/);
  // Every line's help text starts in the same column.
  const helpOf = new Map(SPECS.map((spec) => [spec.name, spec.help]));
  const columns = new Set(
    lines.slice(1).map((line) => line.indexOf(helpOf.get(/--(\S+)/.exec(line)![1]!)!)),
  );
  assert.equal(columns.size, 1);
  // Sorted by name.
  const names = lines.slice(1).map((line) => /--(\S+)/.exec(line)![1]!);
  assert.deepEqual(names, names.toSorted());
});

Deno.test("KLOG_FLAGS has klog's defaults, with -v set to 4 like upstream's binaries", () => {
  const result = parseFlags(KLOG_FLAGS, []);
  assert.ok(!("help" in result));
  assert.deepEqual(result.values, KLOG_DEFAULTS);
  const implemented = KLOG_FLAGS.filter((spec) => spec.implemented === true).map((s) => s.name);
  assert.deepEqual(implemented.toSorted(), ["logtostderr", "v"]);
});

Deno.test("KLOG_FLAGS accepts the flags upstream manifests pass", () => {
  const result = parseFlags(KLOG_FLAGS, [
    "--logtostderr=false",
    "--log-file=/var/log/konnectivity-server.log",
    "--log-file-max-size=0",
    "--alsologtostderr",
    "-v=2",
    "--stderrthreshold=warning",
    "--stderrthreshold=1",
  ]);
  assert.ok(!("help" in result));
  assert.equal(result.values.v, 2);
  assert.equal(result.values.logtostderr, false);
  const reason = "accepted but not implemented (knp logs to stderr only); it has no effect";
  assert.deepEqual(result.notImplemented, [
    `flag --log-file is ${reason}`,
    `flag --log-file-max-size is ${reason}`,
    `flag --alsologtostderr is ${reason}`,
    `flag --stderrthreshold is ${reason}`,
  ]);

  assertInvalid(
    () => parseFlags(KLOG_FLAGS, ["--stderrthreshold=LOUD"]),
    /^invalid argument "LOUD" for "--stderrthreshold" flag: /,
  );
  assertInvalid(
    () => parseFlags(KLOG_FLAGS, ["--log-file-max-size=-1"]),
    'invalid argument "-1" for "--log-file-max-size" flag: must not be negative',
  );
  assertInvalid(() => parseFlags(KLOG_FLAGS, ["--log_dir=/tmp"]), "unknown flag: --log_dir");
});

Deno.test("KNP_LOG_FORMAT_FLAG accepts json and text only", () => {
  const ok = parseFlags([KNP_LOG_FORMAT_FLAG], ["--knp-log-format=text"]);
  assert.ok(!("help" in ok));
  assert.equal(ok.values.knpLogFormat, "text");
  assertInvalid(
    () => parseFlags([KNP_LOG_FORMAT_FLAG], ["--knp-log-format=xml"]),
    'invalid argument "xml" for "--knp-log-format" flag: must be json or text',
  );
});

Deno.test("requireExistingFile() names the flag when the file is missing", () => {
  requireExistingFile("ca-cert", Deno.execPath());
  assertInvalid(
    () => requireExistingFile("ca-cert", "/nonexistent/knp/ca.crt"),
    '--ca-cert: file "/nonexistent/knp/ca.crt" does not exist',
  );
});
