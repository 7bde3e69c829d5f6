import { execFileSync } from 'node:child_process';
import type { TestContext } from 'node:test';

// Tests that need a system package skip with a loud reason when it is
// missing, except under ENCLAVE_REQUIRE_ALL=1 (CI), where they fail.

export function hasTool(command: string, args: string[] = ['--version']): boolean {
  try {
    execFileSync(command, args, { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}

/** Returns false (after skipping t) when the tool is missing and not required. */
export function requireTool(
  t: TestContext,
  command: string,
  debianPackage: string,
  versionArgs: string[] = ['--version'],
): boolean {
  if (hasTool(command, versionArgs)) return true;
  const reason = `${command} is not installed (apt-get install ${debianPackage})`;
  if (process.env.ENCLAVE_REQUIRE_ALL === '1') throw new Error(`ENCLAVE_REQUIRE_ALL=1: ${reason}`);
  process.stderr.write(`\n*** SKIPPED: ${t.name}: ${reason} ***\n`);
  t.skip(reason);
  return false;
}
