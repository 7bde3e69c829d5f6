#!/usr/bin/env node
// Entry point of the `enclave` command. Plain JavaScript so that an old Node
// gets a clear message instead of a syntax error from the TypeScript sources.
import { requireNode } from './node-version.js';

requireNode('enclave', 1);
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2), process.env);
