/**
 * Builds the bench's Go client (`bench/goclient`: the Go konnectivity-client v0.36.0, what
 * kube-apiserver links, behind the same stdin/stdout protocol as `bench/client.ts`) with
 * `go build` into its git-ignored `bin/`. Without `go`, or when the build fails, the gRPC frontend
 * is measured with knp's client library instead, and the report says which client measured.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { progress } from "./output.ts";

const DIR = fileURLToPath(new URL("./goclient/", import.meta.url));

/**
 * The Go client's binary, or undefined when it cannot be built (then `required` makes that an
 * error). `go` fetches the module from the Go module proxy on first use.
 */
export async function buildGoClient(required: boolean): Promise<string | undefined> {
  const out = `${DIR}bin/goclient`;
  const res = await new Deno.Command("go", {
    args: ["build", "-o", out, "."],
    cwd: DIR,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output().catch((err: unknown) => err instanceof Error ? err : new Error(String(err)));
  const why = res instanceof Error
    ? res.message
    : res.success
    ? undefined
    : new TextDecoder().decode(res.stderr).trim();
  if (why === undefined) {
    progress("gRPC frontend: Go konnectivity-client v0.36.0 (bench/goclient)");
    return out;
  }
  if (required) throw new Error(`bench/goclient: go build failed: ${why}`);
  progress(`gRPC frontend: knp's client library (bench/goclient not built: ${why})`);
  return undefined;
}

/** Builds the Go client unless told not to; records which client measures the gRPC frontend. */
export async function grpcFrontendClient(
  values: { "knp-client"?: boolean; "go-client"?: boolean },
  frontends: readonly string[],
  info: Record<string, unknown>,
): Promise<string | undefined> {
  const goBinary = values["knp-client"] || !frontends.includes("grpc")
    ? undefined
    : await buildGoClient(values["go-client"] ?? false);
  info.grpcFrontendClient = goBinary
    ? "Go konnectivity-client v0.36.0 (bench/goclient)"
    : "knp's client library (@knp/client, bench/client.ts)";
  return goBinary;
}
