import assert from "node:assert/strict";
import { generateTestPki, writeTestPki } from "@knp/testing/certs";
import { SERVER_V8_FLAGS, serverPermissionFlags, serverRunFlags } from "./permissions.ts";

const MAIN = new URL("./main.ts", import.meta.url).pathname;

/** Runs `server/main.ts` with the given permission flags; resolves with its exit and stderr. */
async function runServer(flags: string[], args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", ...flags, MAIN, ...args],
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

/** `flags` with `value` removed from the `--allow-<kind>=...` list (the flag dropped if empty). */
function without(flags: string[], kind: string, value: string): string[] {
  const prefix = `--allow-${kind}=`;
  return flags.flatMap((flag) => {
    if (!flag.startsWith(prefix)) return [flag];
    const rest = flag.slice(prefix.length).split(",").filter((v) => v !== value);
    return rest.length === 0 ? [] : [prefix + rest.join(",")];
  });
}

async function setup() {
  const dir = await Deno.makeTempDir({ prefix: "knp-perm-" });
  const files = await writeTestPki(dir, await generateTestPki());
  const uds = `${dir}/konnectivity-server.socket`;
  const args = [
    `--uds-name=${uds}`,
    "--server-port=0",
    `--cluster-cert=${files.serverCert}`,
    `--cluster-key=${files.serverKey}`,
    `--cluster-ca-cert=${files.caCert}`,
    "--agent-bind-address=127.0.0.1",
    "--agent-port=0",
    "--health-bind-address=127.0.0.1",
    "--health-port=0",
    "--admin-port=0",
    "--server-id=perm-test",
  ];
  return { dir, files, uds, args, flags: serverPermissionFlags(args) };
}

Deno.test("server: the computed set is exact for a UDS + mTLS command line", async () => {
  const { dir, files, uds, flags } = await setup();
  try {
    assert.equal(flags.length, 4);
    assert.match(flags[0]!, /^--allow-env=GRPC_NODE_VERBOSITY,.*,no_proxy$/);
    assert.deepEqual(flags.slice(1), [
      `--allow-net=unix:${uds},127.0.0.1:0`,
      `--allow-read=${uds},${files.serverCert},${files.serverKey},${files.caCert}`,
      `--allow-write=${uds}`,
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server: the WebSocket agent link needs only its own port (no loopback hop)", async () => {
  const { dir, uds, args } = await setup();
  try {
    const flags = serverPermissionFlags([...args, "--knp-websocket-port=0"]);
    assert.equal(flags[1], `--allow-net=unix:${uds},127.0.0.1:0`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server: without write on the socket it ends with one line naming the flag", async () => {
  const { dir, uds, args, flags } = await setup();
  try {
    const { code, stderr } = await runServer(without(flags, "write", uds), args);
    assert.equal(code, 1);
    assert.equal(stderr, `proxy-server: --uds-name needs --allow-write=${uds}\n`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server: without read of the cluster cert it ends with one line naming the flag", async () => {
  const { dir, files, args, flags } = await setup();
  try {
    const { code, stderr } = await runServer(without(flags, "read", files.serverCert), args);
    assert.equal(code, 1);
    assert.equal(stderr, `proxy-server: --cluster-cert needs --allow-read=${files.serverCert}\n`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server: --knp-print-permissions prints the run set (permissions, V8 flag), exits 0", async () => {
  const { dir, args, flags } = await setup();
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", MAIN, ...args, "--knp-print-permissions"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0);
    assert.equal(
      new TextDecoder().decode(out.stdout),
      [...flags, SERVER_V8_FLAGS].join("\n") + "\n",
    );
    assert.deepEqual(serverRunFlags(args), [...flags, SERVER_V8_FLAGS]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server: token authentication needs env, the kubeconfig and its files, and the API", async () => {
  const { dir, files, uds, args } = await setup();
  try {
    const kubeconfig = `${dir}/kube/config`;
    await Deno.mkdir(`${dir}/kube`);
    await Deno.writeTextFile(
      kubeconfig,
      "clusters:\n- name: c\n  cluster:\n    server: https://10.0.0.1:6443\n" +
        "    certificate-authority: ca.crt\nusers:\n- name: u\n  user:\n" +
        `    client-certificate: ${files.clientCert}\n    client-key: ../client.key\n` +
        "contexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n",
    );
    const token = [
      ...args.filter((a) => !a.startsWith("--cluster-ca-cert")),
      "--agent-namespace=kube-system",
      "--agent-service-account=konnectivity-agent",
      "--authentication-audience=system:konnectivity-server",
      `--kubeconfig=${kubeconfig}`,
    ];
    assert.deepEqual(serverPermissionFlags(token), [
      "--allow-env",
      `--allow-net=unix:${uds},127.0.0.1:0,10.0.0.1:6443`,
      `--allow-read=${uds},${files.serverCert},${files.serverKey},${kubeconfig},` +
      `${dir}/kube/ca.crt,${files.clientCert},${dir}/client.key`,
      `--allow-write=${uds}`,
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server: --knp-direct-destinations adds net to each destination (all net for ranges)", () => {
  const base = ["--uds-name=/run/k.sock", "--server-id=a", "--agent-bind-address=127.0.0.1"];
  const net = (extra: string[]) =>
    serverPermissionFlags([...base, ...extra]).find((f) => f.startsWith("--allow-net"));
  assert.equal(
    net(["--knp-direct-destinations=10.0.0.1:443,db.internal:5432,[fd00::1]:80,10.9.9.9/32"]),
    "--allow-net=unix:/run/k.sock,127.0.0.1:8091,0.0.0.0:8092,127.0.0.1:8095," +
      "10.0.0.1:443,db.internal:5432,[fd00::1]:80,10.9.9.9",
  );
  assert.match(net(["--knp-direct-destinations=10.0.0.1:8000-8999"])!, /,10\.0\.0\.1$/);
  assert.equal(net(["--knp-direct-destinations=10.0.0.0/8:443"]), "--allow-net");
  assert.equal(net(["--knp-direct-destinations=*.svc:443"]), "--allow-net");
});

Deno.test("server: the lease controller needs the Kubernetes client without token auth", async () => {
  const { dir, files, uds, args } = await setup();
  try {
    const kubeconfig = `${dir}/kubeconfig`;
    await Deno.writeTextFile(
      kubeconfig,
      "clusters:\n- name: c\n  cluster:\n    server: https://10.0.0.2:6443\n" +
        "    certificate-authority: ca.crt\nusers:\n- name: u\n  user: {token: t}\n" +
        "contexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n",
    );
    // In-cluster: the service-account directory; the API's address comes from the environment.
    assert.deepEqual(serverPermissionFlags([...args, "--enable-lease-controller"]), [
      "--allow-env",
      `--allow-net=unix:${uds},127.0.0.1:0`,
      `--allow-read=${uds},${files.serverCert},${files.serverKey},${files.caCert},` +
      "/var/run/secrets/kubernetes.io/serviceaccount",
      `--allow-write=${uds}`,
    ]);
    assert.deepEqual(
      serverPermissionFlags([...args, "--enable-lease-controller", `--kubeconfig=${kubeconfig}`]),
      [
        "--allow-env",
        `--allow-net=unix:${uds},127.0.0.1:0,10.0.0.2:6443`,
        `--allow-read=${uds},${files.serverCert},${files.serverKey},${files.caCert},${kubeconfig}`,
        `--allow-write=${uds}`,
      ],
    );
    // Off: no Kubernetes client, no --allow-env.
    assert.notEqual(serverPermissionFlags(args)[0], "--allow-env");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
