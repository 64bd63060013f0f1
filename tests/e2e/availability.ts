/**
 * Whether the kube-apiserver e2e suites can run here: the Go toolchain (to build kube-apiserver)
 * and etcd. Without them a suite is skipped with the reason printed; with `KNP_E2E_REQUIRED=1`
 * (set by `.ci/run`) a missing part fails instead.
 *
 * @module
 */

// deno-lint-ignore-file no-console -- the reason a suite is skipped
import { ensureEtcd } from "./etcd.ts";
import { missingToolchain } from "./kube_binaries.ts";

/**
 * Why `suite` cannot run here (printed), or undefined when it can.
 *
 * @throws {Error} when `KNP_E2E_REQUIRED=1` and something is missing
 */
export async function e2eUnavailable(suite: string): Promise<string | undefined> {
  const missing = await missingToolchain() ??
    await ensureEtcd().then(() => undefined, (e) => String(e.message ?? e));
  if (missing === undefined) return undefined;
  if (Deno.env.get("KNP_E2E_REQUIRED") === "1") {
    throw new Error(`e2e required but cannot run: ${missing}`);
  }
  console.log(`${suite} skipped: ${missing}`);
  return missing;
}
