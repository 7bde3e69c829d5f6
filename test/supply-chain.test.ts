import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import {
  checkProject,
  type PackageJson,
  type PackageLock,
  supplyChainProblems,
} from '../scripts/check-supply-chain.ts';

const execFileAsync = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '..');
const SCRIPT = path.join(ROOT, 'scripts/check-supply-chain.ts');

async function project(): Promise<{ pkg: PackageJson; lock: PackageLock }> {
  const [pkg, lock] = await Promise.all(
    ['package.json', 'package-lock.json'].map(async (file) =>
      JSON.parse(await readFile(path.join(ROOT, file), 'utf8')),
    ),
  );
  return { pkg, lock };
}

// A copy of the project's two files in a directory of their own, changed by
// `plant`, checked by the script as CI runs it.
async function runOnPlanted(
  plant: (pkg: Record<string, unknown>, lock: Record<string, unknown>) => void,
): Promise<{ code: number; stderr: string }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'enclave-supply-'));
  try {
    const { pkg, lock } = structuredClone(await project());
    plant(pkg as Record<string, unknown>, lock as Record<string, unknown>);
    await writeFile(path.join(dir, 'package.json'), JSON.stringify(pkg));
    await writeFile(path.join(dir, 'package-lock.json'), JSON.stringify(lock));
    try {
      await execFileAsync(process.execPath, [SCRIPT, dir]);
      return { code: 0, stderr: '' };
    } catch (error) {
      const failed = error as { code: number; stderr: string };
      return { code: failed.code, stderr: failed.stderr };
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('OPS-6: the project passes its own supply-chain check: exact direct dependencies, every install script listed', async () => {
  assert.deepEqual(await checkProject(ROOT), []);
  const { stdout } = await execFileAsync(process.execPath, [SCRIPT, ROOT]);
  assert.match(stdout, /pinned/);
});

test('OPS-6: a caret, tilde, wildcard, tag, URL or alias range on a direct dependency fails the check', async () => {
  const { pkg, lock } = await project();
  for (const spec of [
    '^5.12.8',
    '~5.12.8',
    '5.x',
    '*',
    'latest',
    '>=5.0.0',
    'github:fastify/fastify',
    'npm:fastify@5.12.8',
    '5.12',
  ]) {
    const planted = { ...pkg, dependencies: { ...pkg.dependencies, fastify: spec } };
    const root = lock.packages?.[''] ?? {};
    const plantedLock = {
      ...lock,
      packages: { ...lock.packages, '': { ...root, dependencies: { ...root.dependencies, fastify: spec } } },
    };
    const problems = supplyChainProblems(planted, plantedLock);
    assert.deepEqual(
      problems,
      [`dependencies.fastify is "${spec}", not an exact version (pin it: npm install --save-exact)`],
      spec,
    );
  }
  const planted = await runOnPlanted((p) => {
    (p.devDependencies as Record<string, string>).typescript = '^7.0.2';
  });
  assert.equal(planted.code, 1);
  assert.match(planted.stderr, /devDependencies\.typescript is "\^7\.0\.2", not an exact version/);
});

test('OPS-6: a package.json that disagrees with the lockfile root fails the check', async () => {
  const planted = await runOnPlanted((p) => {
    (p.dependencies as Record<string, string>)['left-pad'] = '1.3.0';
  });
  assert.equal(planted.code, 1);
  assert.match(
    planted.stderr,
    /dependencies\.left-pad is "1\.3\.0" in package\.json but "absent" in package-lock\.json/,
  );
});

test('OPS-6: a locked package with an install script that allowScripts does not list fails the check, nested or not', async () => {
  const planted = await runOnPlanted((_p, l) => {
    const packages = l.packages as Record<string, Record<string, unknown>>;
    packages['node_modules/evil-postinstall'] = { version: '1.0.0', hasInstallScript: true };
    packages['node_modules/fastify/node_modules/@scope/nested'] = {
      version: '2.0.0',
      hasInstallScript: true,
    };
  });
  assert.equal(planted.code, 1);
  assert.match(
    planted.stderr,
    /evil-postinstall \(node_modules\/evil-postinstall\) has an install script that allowScripts does not list/,
  );
  assert.match(
    planted.stderr,
    /@scope\/nested \(node_modules\/fastify\/node_modules\/@scope\/nested\) has an install script/,
  );
  // Listing it, even as false (never run), is a decision made: the check passes.
  const listed = await runOnPlanted((p, l) => {
    (l.packages as Record<string, Record<string, unknown>>)['node_modules/evil-postinstall'] = {
      version: '1.0.0',
      hasInstallScript: true,
    };
    (p.allowScripts as Record<string, boolean>)['evil-postinstall'] = false;
  });
  assert.deepEqual(listed, { code: 0, stderr: '' });
});

test('OPS-6: a lockfile older than version 2 (no packages map) fails the check', () => {
  assert.deepEqual(supplyChainProblems({}, { lockfileVersion: 1 }), [
    'package-lock.json is not a lockfile of version 2 or later (run npm install with npm 7 or newer)',
  ]);
});

test('OPS-6: npm pack ships the SBOM: files lists it and prepack writes it', async () => {
  const pkg = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as {
    files: string[];
    scripts: Record<string, string>;
  };
  assert.ok(pkg.files.includes('sbom.cdx.json'));
  assert.equal(pkg.scripts.prepack, 'npm run sbom');
  assert.match(pkg.scripts.sbom ?? '', /^cyclonedx-npm .*--output-file sbom\.cdx\.json/);
  // The tarball's file list, without running prepack: the SBOM is in it when present.
  const dir = await mkdtemp(path.join(tmpdir(), 'enclave-pack-'));
  try {
    await cp(path.join(ROOT, 'package.json'), path.join(dir, 'package.json'));
    await writeFile(path.join(dir, 'sbom.cdx.json'), '{}');
    const { stdout } = await execFileAsync('npm', ['pack', '--dry-run', '--ignore-scripts', '--json'], {
      cwd: dir,
    });
    const [packed] = JSON.parse(stdout) as { files: { path: string }[] }[];
    assert.ok(packed?.files.some((file) => file.path === 'sbom.cdx.json'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
