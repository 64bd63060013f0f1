/**
 * npm:playwright-core for the tests, under the test task's explicit permissions.
 *
 * playwright-core asks `existsSync("/proc/sys/fs/binfmt_misc/WSLInterop")` when it is imported.
 * Node answers `false` for a path it cannot look at; Deno 2.9.6's node:fs throws NotCapable for
 * every `/proc` path unless the process holds `--allow-all`, and the import fails. Before
 * importing it, this module makes `existsSync` answer as Node documents it: `false` whenever the
 * path cannot be checked. Nothing else of playwright-core needs `/proc`.
 *
 * @module
 */

import fs from "node:fs";

const existsSync = fs.existsSync;
fs.existsSync = (path: fs.PathLike): boolean => {
  try {
    return existsSync(path);
  } catch {
    return false;
  }
};

export const { chromium } = await import("playwright-core");
export type { Page } from "playwright-core";
