/**
 * knp's own lint rules, run by `deno lint` (see `lint.plugins` in deno.json):
 *
 * - `knp/max-function-lines`: no function, method or arrow function body longer than 60 lines;
 * - `knp/max-file-lines`: no production file (anything but `*_test.ts` and test helpers) longer
 *   than 400 lines.
 *
 * Deno's linter has no such rules built in; the plugin API gives the node ranges we need.
 *
 * @module
 */

const MAX_FUNCTION_LINES = 60;
const MAX_FILE_LINES = 400;

function isTestFile(filename: string): boolean {
  return /_test\.ts$/.test(filename) || /\/tests\//.test(filename) ||
    /\/testing\//.test(filename) || /\/_[^/]*\.ts$/.test(filename);
}

function lineOf(text: string, offset: number): number {
  let line = 1;
  for (let i = 0; i < offset && i < text.length; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
}

type FunctionLike =
  | Deno.lint.FunctionDeclaration
  | Deno.lint.FunctionExpression
  | Deno.lint.ArrowFunctionExpression;

const plugin: Deno.lint.Plugin = {
  name: "knp",
  rules: {
    "max-function-lines": {
      create(context) {
        if (isTestFile(context.filename)) return {};
        const text = context.sourceCode.text;
        const check = (node: FunctionLike) => {
          const body = node.body;
          if (!body) return;
          const lines = lineOf(text, body.range[1]) - lineOf(text, body.range[0]) + 1;
          if (lines > MAX_FUNCTION_LINES) {
            context.report({
              node,
              message: `function body is ${lines} lines; the limit is ${MAX_FUNCTION_LINES}`,
              hint: "split it into named steps",
            });
          }
        };
        return {
          FunctionDeclaration: check,
          FunctionExpression: check,
          ArrowFunctionExpression: check,
        };
      },
    },
    "max-file-lines": {
      create(context) {
        if (isTestFile(context.filename)) return {};
        return {
          Program(node) {
            const lines = context.sourceCode.text.split("\n").length;
            if (lines > MAX_FILE_LINES) {
              context.report({
                node,
                range: [0, 1],
                message: `file is ${lines} lines; the limit is ${MAX_FILE_LINES}`,
                hint: "split it by responsibility",
              });
            }
          },
        };
      },
    },
  },
};

export default plugin;
