/**
 * `/proc` files for the test, bench and chaos drivers, which run without `--allow-all`.
 *
 * Deno 2.9.6 lets a process read `/proc/<pid>/…`, `/proc/self/…` or `/proc/cpuinfo` only when it
 * holds every permission ("NotCapable: Requires all access to /proc/…, run again with the
 * --allow-all flag"), whatever `--allow-read` grants. The drivers hold `--allow-run` (they start
 * servers and agents), so they read those files through `cat` and list `/proc` directories
 * through `ls`: one short subprocess per read, between measurements, never on a data path.
 * `/proc/self` is this process's pid, not the subprocess's.
 *
 * ```ts
 * const status = readProcFile("/proc/self/status");
 * console.log(/^VmRSS:/m.test(status)); // true
 * ```
 *
 * @module
 */

const decoder = new TextDecoder();

function run(command: string, path: string): string {
  const own = path.replace(/^\/proc\/self(?=\/|$)/, `/proc/${Deno.pid}`);
  const out = new Deno.Command(command, { args: [own], stdout: "piped", stderr: "piped" })
    .outputSync();
  if (!out.success) {
    throw new Deno.errors.NotFound(`${command} ${own}: ${decoder.decode(out.stderr).trim()}`);
  }
  return decoder.decode(out.stdout);
}

/** The text of a `/proc` file. @throws {Deno.errors.NotFound} when it cannot be read */
export function readProcFile(path: string): string {
  return run("cat", path);
}

/** The names in a `/proc` directory. @throws {Deno.errors.NotFound} when it cannot be listed */
export function procDirEntries(path: string): string[] {
  return run("ls", path).split("\n").filter(Boolean);
}
