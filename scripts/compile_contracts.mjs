#!/usr/bin/env node
// Compiles gpunode's Solidity contracts with the solc-js pinned in contracts/package.json and writes
// one JSON artifact per deployable contract:
//   contracts/src/**, contracts/examples/**  ->  node/chain/artifacts/<Name>.json  (package data)
//   contracts/test/**                        ->  tests/chain/contracts/artifacts/<Name>.json
// Settings are pinned so the output is byte-for-byte reproducible.
//   node scripts/compile_contracts.mjs           write the artifacts
//   node scripts/compile_contracts.mjs --check   exit 1 if any artifact differs from a fresh build
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const CONTRACTS = join(ROOT, "contracts");
const SOURCE_DIRS = ["src", "examples", "test"];
const PACKAGE_OUT = join(ROOT, "node", "chain", "artifacts");
const TEST_OUT = join(ROOT, "tests", "chain", "contracts", "artifacts");

// py-evm (the embedded chain) runs prague; solc 0.8.37 would default to osaka.
// No metadata hash or CBOR trailer: the bytecode must not depend on file paths or comments' bytes.
const SETTINGS = {
  optimizer: { enabled: true, runs: 10000 },
  viaIR: true,
  evmVersion: "prague",
  metadata: { bytecodeHash: "none", appendCBOR: false },
};

const require = createRequire(join(CONTRACTS, "package.json"));
const solc = require("solc");

function listSources(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) return listSources(path);
    return entry.endsWith(".sol") ? [path] : [];
  });
}

function readSource(unit) {
  const path = resolve(CONTRACTS, unit);
  if (!path.startsWith(CONTRACTS + "/")) throw new Error(`import outside contracts/: ${unit}`);
  return readFileSync(path, "utf8");
}

// Must match node/chain/artifacts.py: sha256 over "path\0content\0" for each source file the
// contract is built from, in sorted path order.
export function sourceSha256(units) {
  const hash = createHash("sha256");
  for (const unit of [...units].sort()) {
    hash.update(unit + "\0");
    hash.update(readFileSync(resolve(CONTRACTS, unit)));
    hash.update("\0");
  }
  return hash.digest("hex");
}

function compile() {
  const units = SOURCE_DIRS.flatMap((d) => listSources(join(CONTRACTS, d))).map((p) => relative(CONTRACTS, p));
  const input = {
    language: "Solidity",
    sources: Object.fromEntries(units.sort().map((u) => [u, { content: readSource(u) }])),
    settings: {
      ...SETTINGS,
      outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "metadata"] } },
    },
  };
  const findImports = (unit) => {
    try {
      return { contents: readSource(unit) };
    } catch (err) {
      return { error: String(err) };
    }
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const errors = (output.errors ?? []).filter((e) => e.severity === "error");
  for (const e of output.errors ?? []) process.stderr.write(e.formattedMessage + "\n");
  if (errors.length > 0) throw new Error(`${errors.length} compilation error(s)`);
  return output;
}

function artifacts(output) {
  const result = [];
  for (const [unit, contracts] of Object.entries(output.contracts)) {
    for (const [name, c] of Object.entries(contracts)) {
      if (!c.evm.bytecode.object) continue; // interfaces and abstract contracts
      const sources = Object.keys(JSON.parse(c.metadata).sources).sort();
      const artifact = {
        name,
        abi: c.abi,
        bytecode: "0x" + c.evm.bytecode.object,
        deployedBytecode: "0x" + c.evm.deployedBytecode.object,
        compiler: solc.version(),
        settings: SETTINGS,
        sources,
        sourceSha256: sourceSha256(sources),
      };
      const dir = unit.startsWith("test/") ? TEST_OUT : PACKAGE_OUT;
      result.push({ path: join(dir, `${name}.json`), text: JSON.stringify(artifact, null, 2) + "\n" });
    }
  }
  return result;
}

function main() {
  const check = process.argv.includes("--check");
  const built = artifacts(compile());
  const wanted = new Set(built.map((a) => a.path));
  let stale = 0;
  for (const dir of [PACKAGE_OUT, TEST_OUT]) {
    if (!existsSync(dir)) continue;
    for (const entry of readdirSync(dir).filter((e) => e.endsWith(".json"))) {
      const path = join(dir, entry);
      if (wanted.has(path)) continue;
      stale += 1;
      if (check) process.stderr.write(`stale artifact without a source: ${relative(ROOT, path)}\n`);
      else rmSync(path);
    }
  }
  for (const { path, text } of built) {
    const current = existsSync(path) ? readFileSync(path, "utf8") : null;
    if (current === text) continue;
    stale += 1;
    if (check) {
      process.stderr.write(`out of date: ${relative(ROOT, path)}\n`);
    } else {
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, text);
      process.stdout.write(`wrote ${relative(ROOT, path)}\n`);
    }
  }
  if (check && stale > 0) {
    process.stderr.write("run `node scripts/compile_contracts.mjs` and commit the artifacts\n");
    process.exit(1);
  }
  process.stdout.write(`solc ${solc.version()}: ${built.length} artifacts, ${check ? stale + " stale" : "up to date"}\n`);
}

main();
