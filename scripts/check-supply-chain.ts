import { readFile } from 'node:fs/promises';
import path from 'node:path';

// OPS-6: the supply-chain rules CI holds the project to, checked from
// package.json and package-lock.json alone (no network, no node_modules):
//   - every direct dependency is pinned to one exact version, and the
//     lockfile's root records the same specs (else `npm ci` refuses it);
//   - every package in the lockfile that has an install script is named in
//     package.json `allowScripts` (true: it may run; false: it must not), so
//     a new dependency that brings an install script fails CI until someone
//     has decided about it.
//
// Usage: node scripts/check-supply-chain.ts [PROJECT_DIR]

export interface PackageJson {
  readonly dependencies?: Readonly<Record<string, string>>;
  readonly devDependencies?: Readonly<Record<string, string>>;
  readonly optionalDependencies?: Readonly<Record<string, string>>;
  readonly allowScripts?: Readonly<Record<string, boolean>>;
}

interface LockEntry {
  readonly name?: string;
  readonly hasInstallScript?: boolean;
  readonly dependencies?: Readonly<Record<string, string>>;
  readonly devDependencies?: Readonly<Record<string, string>>;
  readonly optionalDependencies?: Readonly<Record<string, string>>;
}

export interface PackageLock {
  readonly lockfileVersion?: number;
  readonly packages?: Readonly<Record<string, LockEntry>>;
}

const DEPENDENCY_KINDS = ['dependencies', 'devDependencies', 'optionalDependencies'] as const;

// One version, as `npm install --save-exact` writes it: no range operator,
// wildcard, tag, URL, path or alias.
const EXACT_VERSION =
  /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$/;

/** The package a lockfile path such as `node_modules/a/node_modules/@b/c` installs. */
function packageName(lockPath: string, entry: LockEntry): string {
  const index = lockPath.lastIndexOf('node_modules/');
  return index === -1 ? (entry.name ?? lockPath) : lockPath.slice(index + 'node_modules/'.length);
}

export function supplyChainProblems(pkg: PackageJson, lock: PackageLock): string[] {
  const problems: string[] = [];
  const packages = lock.packages;
  if (lock.lockfileVersion === undefined || lock.lockfileVersion < 2 || packages === undefined) {
    return [
      'package-lock.json is not a lockfile of version 2 or later (run npm install with npm 7 or newer)',
    ];
  }
  const root = packages[''] ?? {};
  for (const kind of DEPENDENCY_KINDS) {
    const declared = pkg[kind] ?? {};
    const locked = root[kind] ?? {};
    for (const [name, spec] of Object.entries(declared)) {
      if (!EXACT_VERSION.test(spec)) {
        problems.push(
          `${kind}.${name} is "${spec}", not an exact version (pin it: npm install --save-exact)`,
        );
      }
      if (locked[name] !== spec) {
        problems.push(
          `${kind}.${name} is "${spec}" in package.json but "${locked[name] ?? 'absent'}" in package-lock.json`,
        );
      }
    }
    for (const name of Object.keys(locked)) {
      if (declared[name] === undefined) {
        problems.push(`${kind}.${name} is in package-lock.json but not in package.json`);
      }
    }
  }
  const allowed = pkg.allowScripts ?? {};
  for (const [lockPath, entry] of Object.entries(packages)) {
    if (entry.hasInstallScript !== true || lockPath === '') continue;
    const name = packageName(lockPath, entry);
    if (typeof allowed[name] !== 'boolean') {
      problems.push(
        `${name} (${lockPath}) has an install script that allowScripts does not list: add "${name}": true or false`,
      );
    }
  }
  return problems;
}

export async function checkProject(dir: string): Promise<string[]> {
  const [pkg, lock] = await Promise.all(
    ['package.json', 'package-lock.json'].map(async (file) =>
      JSON.parse(await readFile(path.join(dir, file), 'utf8')),
    ),
  );
  return supplyChainProblems(pkg as PackageJson, lock as PackageLock);
}

if (import.meta.main) {
  const dir = path.resolve(process.argv[2] ?? '.');
  const problems = await checkProject(dir);
  for (const problem of problems) process.stderr.write(`supply chain: ${problem}\n`);
  if (problems.length > 0) process.exit(1);
  process.stdout.write(
    'supply chain: direct dependencies pinned; every install script is listed in allowScripts\n',
  );
}
