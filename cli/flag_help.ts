/**
 * Help text of knp's binaries in pflag's layout.
 *
 * @module
 */

import { formatGoDuration } from "./duration.ts";
import type { FlagSpec, FlagType } from "./flags.ts";

const TYPE_NAMES: Record<FlagType, string> = {
  string: "string",
  bool: "",
  int: "int",
  float: "float32",
  duration: "duration",
  stringSlice: "strings",
};

function defaultText(spec: FlagSpec): string | undefined {
  if (spec.defaultText !== undefined) return spec.defaultText;
  if (typeof spec.default === "function") return undefined;
  const value = spec.default;
  switch (spec.type) {
    case "string":
      return value === "" ? undefined : JSON.stringify(value);
    case "bool":
      return value === true ? "true" : undefined;
    case "int":
    case "float":
      return value === 0 ? undefined : String(value);
    case "duration":
      return value === 0 ? undefined : formatGoDuration(value as number);
    case "stringSlice":
      return (value as string[]).length === 0 ? undefined : `[${(value as string[]).join(",")}]`;
  }
}

/**
 * Formats help text listing every flag that is neither hidden nor deprecated, sorted by name, in
 * pflag's layout: `--name type   help (default x)`, plus a note on flags knp does not implement.
 *
 * @param title First line of the help text, e.g. `"Usage of proxy-server:"`.
 * @param specs The flags to list.
 * @returns The help text, ending with a newline.
 */
export function formatHelp(title: string, specs: readonly FlagSpec[]): string {
  const visible = specs
    .filter((spec) => spec.hidden !== true && spec.deprecated === undefined)
    .toSorted((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const heads = visible.map((spec) => {
    const short = spec.short === undefined ? "    " : `-${spec.short}, `;
    const type = TYPE_NAMES[spec.type];
    return `  ${short}--${spec.name}${type === "" ? "" : ` ${type}`}`;
  });
  const width = Math.max(0, ...heads.map((head) => head.length));
  const lines = visible.map((spec, index) => {
    let text = spec.help;
    const shown = defaultText(spec);
    if (shown !== undefined) text += ` (default ${shown})`;
    if (spec.implemented !== true) {
      const reason = typeof spec.implemented === "string"
        ? spec.implemented
        : "not implemented yet";
      text += ` [knp: accepted but ${reason}; no effect]`;
    }
    return `${heads[index]!.padEnd(width)}   ${text}`;
  });
  return `${title}\n${lines.join("\n")}\n`;
}
