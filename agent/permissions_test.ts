import assert from "node:assert/strict";
import { generateTestPki, writeTestPki } from "@knp/testing/certs";
import { agentPermissionFlags } from "./permissions.ts";

const MAIN = new URL("./main.ts", import.meta.url).pathname;

/** Runs `agent/main.ts` with the given permission flags; resolves with its exit and stderr. */
async function runAgent(flags: string[], args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", ...flags, MAIN, ...args],
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

async function setup() {
  const dir = await Deno.makeTempDir({ prefix: "knp-perm-" });
  const files = await writeTestPki(dir, await generateTestPki());
  const args = [
    `--ca-cert=${files.caCert}`,
    `--agent-cert=${files.clientCert}`,
    `--agent-key=${files.clientKey}`,
    "--proxy-server-host=127.0.0.1",
    "--health-server-host=127.0.0.1",
    "--health-server-port=0",
    "--admin-server-port=0",
    "--agent-id=perm-test",
  ];
  return { dir, files, args, flags: agentPermissionFlags(args) };
}

Deno.test("agent: the computed set is exact (all net: it dials any backend)", async () => {
  const { dir, files, flags } = await setup();
  try {
    assert.equal(flags.length, 3);
    // grpc-js's variables, then the egress proxy's upper-case ones (lower case: already there).
    assert.match(
      flags[0]!,
      /^--allow-env=GRPC_NODE_VERBOSITY,.*,no_proxy,HTTPS_PROXY,HTTP_PROXY,NO_PROXY$/,
    );
    assert.deepEqual(flags.slice(1), [
      "--allow-net",
      `--allow-read=${files.caCert},${files.clientCert},${files.clientKey}`,
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("agent: without read of the client cert it ends with one line naming the flag", async () => {
  const { dir, files, args, flags } = await setup();
  try {
    const read = `--allow-read=${files.caCert},${files.clientKey}`;
    const narrowed = flags.map((f) => f.startsWith("--allow-read=") ? read : f);
    const { code, stderr } = await runAgent(narrowed, args);
    assert.equal(code, 1);
    assert.equal(stderr, `proxy-agent: --agent-cert needs --allow-read=${files.clientCert}\n`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("agent: without net it ends with one line naming the flag", async () => {
  const { dir, args, flags } = await setup();
  try {
    const { code, stderr } = await runAgent(flags.filter((f) => f !== "--allow-net"), args);
    assert.equal(code, 1);
    assert.equal(
      stderr,
      "proxy-agent: dialing backends (any address a server asks for) needs --allow-net\n",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("agent: --knp-egress-proxy drops the proxy variables; without them it names the need", async () => {
  const { dir, args, flags } = await setup();
  try {
    const flagged = agentPermissionFlags([...args, "--knp-egress-proxy=http://127.0.0.1:3128"]);
    assert.match(flagged[0]!, /,no_proxy$/);
    const env = flags[0]!.replace(",HTTPS_PROXY", "");
    const { code, stderr } = await runAgent([env, ...flags.slice(1)], args);
    assert.equal(code, 1);
    assert.equal(
      stderr,
      "proxy-agent: the egress proxy from the environment (--knp-egress-proxy unset) needs " +
        "--allow-env=HTTPS_PROXY\n",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("agent: --count-server-leases needs env and the kubeconfig's files", async () => {
  const { dir, files, args } = await setup();
  try {
    const kubeconfig = `${dir}/kubeconfig`;
    await Deno.writeTextFile(
      kubeconfig,
      "clusters:\n- name: c\n  cluster:\n    server: https://10.0.0.2:6443\n" +
        "    certificate-authority: ca.crt\nusers:\n- name: u\n  user:\n" +
        `    client-certificate: ${files.clientCert}\n    client-key: ${files.clientKey}\n` +
        "contexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n",
    );
    assert.deepEqual(
      agentPermissionFlags([...args, "--count-server-leases", `--kubeconfig=${kubeconfig}`]),
      [
        "--allow-env",
        "--allow-net",
        // The kubeconfig's CA is the agent's --ca-cert here (listed once).
        `--allow-read=${kubeconfig},${files.caCert},${files.clientCert},${files.clientKey}`,
      ],
    );
    assert.deepEqual(agentPermissionFlags([...args, "--count-server-leases"]).slice(0, 3), [
      "--allow-env",
      "--allow-net",
      `--allow-read=/var/run/secrets/kubernetes.io/serviceaccount,${files.caCert},` +
      `${files.clientCert},${files.clientKey}`,
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
