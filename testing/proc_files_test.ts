import assert from "node:assert/strict";
import { procDirEntries, readProcFile } from "./proc_files.ts";

Deno.test("readProcFile: another process's status and this process's, without --allow-all", async () => {
  const child = new Deno.Command("sleep", { args: ["30"] }).spawn();
  try {
    assert.match(
      readProcFile(`/proc/${child.pid}/status`),
      new RegExp(`^Pid:\\s+${child.pid}$`, "m"),
    );
    // /proc/self is this test process, not the cat that reads it.
    assert.match(readProcFile("/proc/self/status"), new RegExp(`^Pid:\\s+${Deno.pid}$`, "m"));
    assert.ok(procDirEntries(`/proc/${child.pid}/fd`).includes("0"));
  } finally {
    child.kill();
    await child.status;
  }
});

Deno.test("readProcFile: a file that is not there is NotFound, naming the path", () => {
  assert.throws(() => readProcFile("/proc/0/status"), (e: Error) => {
    assert.ok(e instanceof Deno.errors.NotFound);
    assert.match(e.message, /\/proc\/0\/status/);
    return true;
  });
});
