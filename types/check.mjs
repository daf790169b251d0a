// Type-checks script plugins with the TypeScript compiler installed here (`npm ci`): for each
// plugin directory, what `tsc -p <dir>` reports with the tsconfig.json there (which extends
// tsconfig.plugin.json). One process for all of them, sharing the parsed lib and declaration
// files, so checking many plugins costs little more than checking one. Usage:
//   node check.mjs              every directory of ../plugins/core, and ./tests/*
//   node check.mjs DIR...       these plugin directories
// Prints `ok    DIR` or `FAIL  DIR` and the errors, then `N passed, N failed`. Exits 1 when a
// check fails, or when a directory with an index.ts has no tsconfig.json.
import { existsSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
let ts;
try {
  ts = createRequire(import.meta.url)("typescript");
} catch {
  console.error(`TypeScript is not installed: run \`npm ci\` in ${here} first.`);
  process.exit(1);
}

const subdirs = (dir) =>
  existsSync(dir)
    ? readdirSync(dir, { withFileTypes: true })
        .filter((e) => e.isDirectory() && !e.name.startsWith("."))
        .map((e) => join(dir, e.name))
        .sort()
    : [];

const args = process.argv.slice(2);
const dirs = args.length
  ? args.map((d) => resolve(d))
  : [...subdirs(join(here, "..", "plugins", "core")), ...subdirs(join(here, "tests"))];

// Files never change during a run: parse each once, whichever program asks.
const parsed = new Map();
const formatHost = {
  getCanonicalFileName: (f) => f,
  getCurrentDirectory: () => process.cwd(),
  getNewLine: () => "\n",
};

/** The diagnostics `tsc -p dir` would print. */
function check(dir) {
  const configPath = join(dir, "tsconfig.json");
  const configErrors = [];
  const config = ts.getParsedCommandLineOfConfigFile(configPath, undefined, {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (d) => configErrors.push(d),
  });
  if (!config) return configErrors;
  const host = ts.createCompilerHost(config.options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (fileName, languageVersion, ...rest) => {
    const key = `${fileName}\0${JSON.stringify(languageVersion)}`;
    if (!parsed.has(key)) parsed.set(key, getSourceFile(fileName, languageVersion, ...rest));
    return parsed.get(key);
  };
  const program = ts.createProgram({
    rootNames: config.fileNames,
    options: config.options,
    projectReferences: config.projectReferences,
    configFileParsingDiagnostics: config.errors,
    host,
  });
  return [...config.errors, ...ts.getPreEmitDiagnostics(program)];
}

let checked = 0;
let failed = 0;
for (const dir of dirs) {
  const name = relative(process.cwd(), dir) || ".";
  if (!existsSync(join(dir, "tsconfig.json"))) {
    if (existsSync(join(dir, "index.ts"))) {
      console.log(`FAIL  ${name}`);
      console.log(`      index.ts without a tsconfig.json (add one that extends types/tsconfig.plugin.json)`);
      checked += 1;
      failed += 1;
    }
    continue;
  }
  checked += 1;
  const diagnostics = check(dir);
  if (diagnostics.length === 0) {
    console.log(`ok    ${name}`);
  } else {
    failed += 1;
    console.log(`FAIL  ${name}`);
    console.log(ts.formatDiagnostics(diagnostics, formatHost).trim().replace(/^/gm, "      "));
  }
}
console.log(`${checked - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
