/**
 * etcd for the e2e suite: Debian's `etcd-server` (3.4) works with kube-apiserver v1.37. When it
 * is missing and we are root, it is installed with apt-get.
 *
 * @module
 */

async function has(cmd: string): Promise<boolean> {
  try {
    const out = await new Deno.Command(cmd, { args: ["--version"], stdout: "null", stderr: "null" })
      .output();
    return out.success;
  } catch {
    return false;
  }
}

async function apt(args: string[]): Promise<void> {
  const out = await new Deno.Command("apt-get", {
    args,
    env: { DEBIAN_FRONTEND: "noninteractive" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`apt-get ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** Makes sure `etcd` is on PATH; throws with the reason when it cannot be. */
export async function ensureEtcd(): Promise<void> {
  if (await has("etcd")) return;
  if (Deno.uid() !== 0 || !(await has("apt-get"))) {
    throw new Error("etcd is not on PATH and cannot be installed here (needs root and apt-get)");
  }
  await apt(["update"]);
  await apt(["install", "-y", "etcd-server"]);
  if (!(await has("etcd"))) {
    throw new Error("apt-get installed etcd-server but etcd is not on PATH");
  }
}
