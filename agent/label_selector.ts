/**
 * Kubernetes label-selector syntax, checked for `--lease-label-selector` the way
 * `labels.Parse` does.
 *
 * @module
 */

const NAME_PART = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function labelKeyProblem(key: string): string | undefined {
  const parts = key.split("/");
  if (parts.length > 2) return `invalid label key "${key}": at most one "/" is allowed`;
  const name = parts[parts.length - 1]!;
  if (parts.length === 2) {
    const prefix = parts[0]!;
    if (prefix.length === 0 || prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix)) {
      return `invalid label key "${key}": the prefix must be a DNS subdomain`;
    }
  }
  if (name.length === 0 || name.length > 63 || !NAME_PART.test(name)) {
    return `invalid label key "${key}": the name must be 1-63 alphanumerics, '-', '_' or '.', ` +
      `starting and ending with an alphanumeric`;
  }
  return undefined;
}

function labelValueProblem(value: string): string | undefined {
  if (value === "" || (value.length <= 63 && NAME_PART.test(value))) return undefined;
  return `invalid label value "${value}": must be at most 63 alphanumerics, '-', '_' or '.', ` +
    `starting and ending with an alphanumeric`;
}

const SELECTOR_TOKEN = /\s*(!=|==|=|!|\(|\)|,|<|>|[^\s!=(),<>]+)/y;

function tokenizeSelector(text: string): string[] {
  const tokens: string[] = [];
  SELECTOR_TOKEN.lastIndex = 0;
  while (SELECTOR_TOKEN.lastIndex < text.length) {
    const match = SELECTOR_TOKEN.exec(text);
    if (match === null) break; // only trailing whitespace is left
    tokens.push(match[1]!);
  }
  return tokens;
}

function isIdentifier(token: string | undefined): token is string {
  return token !== undefined && !/^(!=|==|=|!|\(|\)|,|<|>)$/.test(token) && token !== "in" &&
    token !== "notin";
}

/** A parse step's outcome: the index of the next token, or the problem found. */
type Step = number | string;

function found(token: string | undefined): string {
  return token === undefined ? "end of string" : `'${token}'`;
}

/** Parses `(a,b,...)` after `in`/`notin` at `tokens[i]`. */
function valueSetAt(tokens: readonly string[], i: number, op: string): Step {
  if (tokens[i] !== "(") return `found ${found(tokens[i])}, expected '(' after ${op}`;
  i++;
  const values: string[] = [];
  while (true) {
    const value = tokens[i];
    if (value === ")") {
      i++;
      break;
    }
    if (value === ",") {
      values.push("");
      i++;
      continue;
    }
    if (!isIdentifier(value)) return `found ${found(value)}, expected a value or ')'`;
    values.push(value);
    i++;
    if (tokens[i] === ",") i++;
    else if (tokens[i] !== ")") return `found ${found(tokens[i])}, expected ',' or ')'`;
  }
  if (values.length === 0) return `the value set of '${op}' cannot be empty`;
  for (const value of values) {
    const problem = labelValueProblem(value);
    if (problem !== undefined) return problem;
  }
  return i;
}

/** Parses what follows a key: the operator at `tokens[i]` and its value(s). */
function operatorAt(tokens: readonly string[], i: number): Step {
  const op = tokens[i];
  if (op === undefined || op === ",") return i; // `k`: existence requirement.
  i++;
  if (op === "in" || op === "notin") return valueSetAt(tokens, i, op);
  if (op === "=" || op === "==" || op === "!=") {
    const value = tokens[i];
    if (value === undefined || value === ",") return i; // An empty value is allowed.
    if (!isIdentifier(value)) return `found ${found(value)}, expected a value`;
    return labelValueProblem(value) ?? i + 1;
  }
  if (op === "<" || op === ">") {
    const value = tokens[i];
    if (value === undefined || !/^[+-]?\d+$/.test(value)) {
      return `found ${found(value)}, expected an integer after '${op}'`;
    }
    return i + 1;
  }
  return `found ${found(op)}, expected one of in, notin, =, ==, !=, <, >`;
}

/** Parses one requirement (`!k`, `k`, `k op value(s)`) starting at `tokens[i]`. */
function requirementAt(tokens: readonly string[], i: number): Step {
  let token = tokens[i];
  const negated = token === "!";
  if (negated) token = tokens[++i];
  if (!isIdentifier(token)) return `found ${found(token)}, expected a label key`;
  const keyProblem = labelKeyProblem(token);
  if (keyProblem !== undefined) return keyProblem;
  i++;
  return negated ? i : operatorAt(tokens, i); // `!k`: non-existence requirement.
}

/**
 * Checks Kubernetes label-selector syntax (`k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a)`,
 * `k`, `!k`, `k>1`, `k<1`, comma-separated).
 *
 * @param text The selector.
 * @returns The problem, or `undefined` if the selector is valid.
 */
export function labelSelectorProblem(text: string): string | undefined {
  const tokens = tokenizeSelector(text);
  let i = 0;
  while (i < tokens.length) {
    const step = requirementAt(tokens, i);
    if (typeof step === "string") return step;
    i = step;
    if (i >= tokens.length) break;
    if (tokens[i] !== ",") return `found ${found(tokens[i])}, expected ','`;
    i++;
    if (i >= tokens.length) return "found end of string, expected a label key after ','";
  }
  return undefined;
}
