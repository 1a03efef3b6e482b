// Tokenise spec files with VS Code's TextMate engine: node tokenize.js GRAMMAR FILE... -> JSON on stdout,
// {file: [[{start, end, scopes}, ...] per line]}.
const fs = require("fs");
const path = require("path");
const oniguruma = require("vscode-oniguruma");
const textmate = require("vscode-textmate");

async function main() {
  const [grammarPath, ...files] = process.argv.slice(2);
  const wasm = fs.readFileSync(path.join(path.dirname(require.resolve("vscode-oniguruma")), "onig.wasm"));
  await oniguruma.loadWASM(wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength));
  const registry = new textmate.Registry({
    onigLib: Promise.resolve({
      createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
      createOnigString: (text) => new oniguruma.OnigString(text),
    }),
    loadGrammar: async () => textmate.parseRawGrammar(fs.readFileSync(grammarPath, "utf8"), grammarPath),
  });
  const grammar = await registry.loadGrammar("source.resdsl");
  const result = {};
  for (const file of files) {
    let state = textmate.INITIAL;
    result[file] = fs.readFileSync(file, "utf8").split("\n").map((line) => {
      const tokens = grammar.tokenizeLine(line, state);
      state = tokens.ruleStack;
      return tokens.tokens.map((t) => ({ start: t.startIndex, end: t.endIndex, scopes: t.scopes }));
    });
  }
  process.stdout.write(JSON.stringify(result));
}

main().catch((error) => { console.error(error); process.exit(1); });
