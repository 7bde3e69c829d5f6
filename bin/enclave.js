#!/usr/bin/env node
// Entry point of the `enclave` command. Plain JavaScript so that an old Node
// gets a clear message instead of a syntax error from the TypeScript sources.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  process.stderr.write(`enclave: Node.js 22.18 or newer is required (this is ${process.version})\n`);
  process.exit(1);
}
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2), process.env);
