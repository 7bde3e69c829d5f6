#!/usr/bin/env node
// Entry point of `enclave-verify`, the offline audit verifier (AUD-5). Plain
// JavaScript so that an old Node gets a clear message instead of a syntax
// error from the TypeScript sources. It loads only src/audit's pure code.
import { requireNode } from './node-version.js';

requireNode('enclave-verify', 2);
const { runVerify } = await import('../src/audit/verify-cli.ts');
process.exitCode = await runVerify(process.argv.slice(2), {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  progress: process.stderr.isTTY ? process.stderr : undefined,
});
