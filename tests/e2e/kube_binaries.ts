/**
 * kube-apiserver and kubectl for the end-to-end suite, built from the Go module proxy into a cache
 * keyed by version and reused across runs on the same machine.
 *
 * kube-apiserver is a published Go module (`k8s.io/kubernetes`). Its staging modules
 * (`k8s.io/api`, `k8s.io/apiserver`, …) are required at `v0.0.0` and replaced by relative paths
 * in its own go.mod, so a wrapper module requires `k8s.io/kubernetes vX.Y.Z` and replaces each
 * staging module with its published `v0.Y.Z`. The list of staging modules is read from the
 * downloaded go.mod, so a version bump needs no edit here. Cold: about 7 CPU-minutes, 2.5 GB RAM
 * and 4 GB of disk; warm (Go's build cache): seconds.
 *
 * @module
 */

import { join } from "node:path";

/** The Kubernetes version the e2e suite runs against. */
export const KUBE_VERSION = "v1.37.2";

/** Modules in k8s.io/kubernetes' replace list that are neither needed nor resolvable. */
const SKIPPED_STAGING = new Set(["k8s.io/sample-controller", "k8s.io/sample-cli-plugin"]);

/** Paths of the built binaries. */
export interface KubeBinaries {
  kubeApiserver: string;
  kubectl: string;
}

/** Where built binaries are kept: `$KNP_E2E_CACHE`, else `~/.cache/knp-e2e`. */
export function cacheDir(): string {
  const explicit = Deno.env.get("KNP_E2E_CACHE");
  if (explicit) return explicit;
  const home = Deno.env.get("HOME") ?? "/tmp";
  return join(Deno.env.get("XDG_CACHE_HOME") ?? join(home, ".cache"), "knp-e2e");
}

/** Why the e2e suite cannot run here, or undefined when it can (Go is on PATH). */
export async function missingToolchain(): Promise<string | undefined> {
  try {
    const out = await new Deno.Command("go", { args: ["version"], stdout: "null", stderr: "null" })
      .output();
    return out.success ? undefined : "`go version` failed";
  } catch {
    return "Go is not on PATH (needed to build kube-apiserver from the Go module proxy)";
  }
}

async function run(cmd: string, args: string[], cwd: string, env: Record<string, string> = {}) {
  const out = await new Deno.Command(cmd, { args, cwd, env, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    const text = new TextDecoder().decode(out.stderr).slice(-4000);
    throw new Error(`${cmd} ${args.join(" ")} failed in ${cwd}:\n${text}`);
  }
  return new TextDecoder().decode(out.stdout);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** The staging modules that k8s.io/kubernetes replaces with local paths. */
async function stagingModules(work: string, version: string): Promise<string[]> {
  const info = JSON.parse(
    await run("go", ["mod", "download", "-json", `k8s.io/kubernetes@${version}`], work),
  );
  const goMod = await Deno.readTextFile(info.GoMod);
  const modules: string[] = [];
  for (const m of goMod.matchAll(/^\s*(k8s\.io\/[\w.-]+)\s+=>\s+\.\/staging\//gm)) {
    if (m[1] !== undefined && !SKIPPED_STAGING.has(m[1])) modules.push(m[1]);
  }
  return modules;
}

/** Writes the wrapper module that builds kube-apiserver and kubectl at `version`. */
async function writeWrapper(work: string, version: string): Promise<void> {
  await Deno.writeTextFile(join(work, "go.mod"), "module knp.local/kube-e2e\n\ngo 1.26\n");
  const staging = await stagingModules(work, version);
  const minor = version.replace(/^v1\./, "v0.");
  const lines = [
    "module knp.local/kube-e2e",
    "",
    "go 1.26",
    "",
    `require k8s.io/kubernetes ${version}`,
    "",
    ...staging.map((m) => `replace ${m} => ${m} ${minor}`),
    "",
  ];
  await Deno.writeTextFile(join(work, "go.mod"), lines.join("\n"));
  await Deno.writeTextFile(
    join(work, "tools.go"),
    '//go:build tools\n\npackage kube\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n' +
      '\t_ "k8s.io/kubernetes/cmd/kubectl"\n)\n',
  );
}

/**
 * Returns the cached binaries for `version`, building them first when absent.
 * @param log progress lines (the cold build takes minutes)
 */
export async function ensureKubeBinaries(
  version = KUBE_VERSION,
  log: (line: string) => void = () => {},
): Promise<KubeBinaries> {
  const dir = join(cacheDir(), `kube-${version}`);
  const bins = { kubeApiserver: join(dir, "kube-apiserver"), kubectl: join(dir, "kubectl") };
  if (await exists(bins.kubeApiserver) && await exists(bins.kubectl)) return bins;
  await Deno.mkdir(dir, { recursive: true });
  const work = await Deno.makeTempDir({ prefix: "knp-kube-build-" });
  try {
    log(`building kube-apiserver and kubectl ${version} from the Go module proxy into ${dir}`);
    await writeWrapper(work, version);
    const env = { GOFLAGS: "-mod=mod", CGO_ENABLED: "0" };
    await run("go", ["mod", "tidy"], work, env);
    const out = join(dir, ".partial");
    await run(
      "go",
      [
        "build",
        "-trimpath",
        "-o",
        out + "/",
        "k8s.io/kubernetes/cmd/kube-apiserver",
        "k8s.io/kubernetes/cmd/kubectl",
      ],
      work,
      env,
    );
    // Move into place last, so an interrupted build never leaves a half-written cache entry.
    await Deno.rename(join(out, "kube-apiserver"), bins.kubeApiserver);
    await Deno.rename(join(out, "kubectl"), bins.kubectl);
    await Deno.remove(out, { recursive: true });
    return bins;
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}
