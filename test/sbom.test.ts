import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, type TestContext, test } from 'node:test';
import { promisify } from 'node:util';
import { createDetachedSigner } from '../src/posture/detached-jws.ts';
import { createSecurityDocuments, readSbomDigest, SBOM_FILE } from '../src/posture/security-document.ts';
import { createTestDatabase } from './helpers/database.ts';

const execFileAsync = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '..');
const CLI = path.join(ROOT, 'node_modules/@cyclonedx/cyclonedx-npm/bin/cyclonedx-npm-cli.js');

interface NpmLsNode {
  readonly version?: string;
  readonly dependencies?: Readonly<Record<string, NpmLsNode>>;
}

function installed(node: NpmLsNode, into: Set<string>): Set<string> {
  for (const [name, child] of Object.entries(node.dependencies ?? {})) {
    if (child.version !== undefined) into.add(`${name}@${child.version}`);
    installed(child, into);
  }
  return into;
}

/** Whether the SBOM tool is missing, in which case the test is skipped (and fails under ENCLAVE_REQUIRE_ALL=1). */
function skippedWithoutTool(t: TestContext): boolean {
  if (existsSync(CLI)) return false;
  const reason = '@cyclonedx/cyclonedx-npm is not installed (npm ci installs it as a devDependency)';
  if (process.env.ENCLAVE_REQUIRE_ALL === '1') throw new Error(`ENCLAVE_REQUIRE_ALL=1: ${reason}`);
  process.stderr.write(`\n*** SKIPPED: ${t.name}: ${reason} ***\n`);
  t.skip(reason);
  return true;
}

let scratch: Promise<string> | undefined;
/** A scratch directory holding sbom.cdx.json as `npm run sbom` writes it (made once, shared by the tests). */
function generatedSbomDir(): Promise<string> {
  scratch ??= (async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'enclave-sbom-'));
    const pkg = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as {
      scripts: Record<string, string>;
    };
    // The same arguments as `npm run sbom`, writing to the scratch directory.
    const args = (pkg.scripts.sbom ?? '').split(' ').slice(1);
    args[args.indexOf('--output-file') + 1] = path.join(dir, SBOM_FILE);
    await execFileAsync(process.execPath, [CLI, ...args], { cwd: ROOT, maxBuffer: 64 * 1024 * 1024 });
    return dir;
  })();
  return scratch;
}
after(async () => {
  if (scratch !== undefined) await rm(await scratch, { recursive: true, force: true });
});

test('OPS-6: npm run sbom writes a CycloneDX SBOM naming every production package npm ls lists', async (t) => {
  if (skippedWithoutTool(t)) return;
  const output = path.join(await generatedSbomDir(), SBOM_FILE);
  const sbom = JSON.parse(await readFile(output, 'utf8')) as {
    bomFormat: string;
    metadata: { component: { name: string } };
    components: { name: string; group?: string; version: string }[];
  };
  assert.equal(sbom.bomFormat, 'CycloneDX');
  assert.equal(sbom.metadata.component.name, 'enclave');
  const listed = new Set(
    sbom.components.map(
      (c) => `${c.group === undefined || c.group === '' ? '' : `${c.group}/`}${c.name}@${c.version}`,
    ),
  );
  const { stdout } = await execFileAsync('npm', ['ls', '--omit', 'dev', '--all', '--json'], {
    cwd: ROOT,
    maxBuffer: 64 * 1024 * 1024,
  });
  const fromNpm = installed(JSON.parse(stdout) as NpmLsNode, new Set());
  const versionOf = async (name: string): Promise<string> =>
    (
      JSON.parse(await readFile(path.join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as {
        version: string;
      }
    ).version;
  assert.ok(fromNpm.has(`fastify@${await versionOf('fastify')}`));
  // Both ways: nothing npm installs for production is left out, and nothing else is claimed.
  assert.deepEqual(
    [...fromNpm].filter((name) => !listed.has(name)),
    [],
  );
  assert.deepEqual(
    [...listed].filter((name) => !fromNpm.has(name)),
    [],
  );
  assert.ok(
    !listed.has(`@biomejs/biome@${await versionOf('@biomejs/biome')}`),
    'dev dependencies are left out',
  );
});

test('OPS-6: /security.json carries the SHA-256 of the SBOM the build ships: readSbomDigest of a real SBOM, and the document built with it', async (t) => {
  if (skippedWithoutTool(t)) return;
  const dir = await generatedSbomDir();
  const sha256 = createHash('sha256')
    .update(await readFile(path.join(dir, SBOM_FILE)))
    .digest('hex');
  const sbom = await readSbomDigest(dir);
  assert.deepEqual(sbom, { file: 'sbom.cdx.json', sha256 });
  assert.equal(await readSbomDigest(path.join(dir, 'no-build-here')), null, 'a build without an SBOM: null');

  const db = await createTestDatabase();
  try {
    const documents = createSecurityDocuments({
      sql: db.app,
      origin: 'https://enclave.test',
      contact: undefined,
      controls: [],
      sbom,
      postureIntervalMinutes: 60,
      signer: createDetachedSigner(generateKeyPairSync('ed25519').privateKey, 'test'),
    });
    const { document, body } = await documents.current();
    assert.deepEqual(document.sbom, { file: 'sbom.cdx.json', sha256 });
    // The served (and signed) bytes carry it too.
    assert.deepEqual((JSON.parse(body.toString('utf8')) as typeof document).sbom, {
      file: 'sbom.cdx.json',
      sha256,
    });
  } finally {
    await db.drop();
  }
});
