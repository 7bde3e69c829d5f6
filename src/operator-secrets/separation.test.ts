import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runProcess } from '../../test/helpers/process.ts';

// VLT-7: code that holds customer credentials (src/vault/) and code that
// holds operator secrets (src/operator-secrets/) must not import each other,
// so a bug or a compromised dependency in one cannot reach the other's keys.
// The project's own Biome, with the project's biome.json, lints planted
// cross-imports; they sit in a temporary copy of the layout, never in the
// real tree. (Biome's --stdin-file-path mode prints no lint diagnostics, so it
// cannot be used to plant them.)

const ROOT = path.join(import.meta.dirname, '..', '..');
const BIOME = path.join(ROOT, 'node_modules', '.bin', 'biome');
const RULE = 'lint/style/noRestrictedImports';

interface Diagnostic {
  readonly category: string;
  readonly message: string;
  readonly location: { readonly path: string };
}

interface LintResult {
  readonly code: number | null;
  readonly diagnostics: readonly Diagnostic[];
  readonly output: string;
}

async function lint(cwd: string, args: readonly string[]): Promise<LintResult> {
  const { code, stdout, stderr } = await runProcess(BIOME, ['lint', '--reporter=json', ...args], { cwd });
  let report: { diagnostics: Diagnostic[] };
  try {
    report = JSON.parse(stdout) as { diagnostics: Diagnostic[] };
  } catch {
    throw new Error(`biome printed no JSON report (exit ${code}): ${stdout}${stderr}`);
  }
  return { code, diagnostics: report.diagnostics, output: stdout + stderr };
}

describe('VLT-7: operator secrets and customer credentials stay apart', () => {
  let dir: string;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'enclave-vlt7-'));
    await copyFile(path.join(ROOT, 'biome.json'), path.join(dir, 'biome.json'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  /** Writes `source` at `file` (relative to the copy) and lints it with the project's config. */
  async function lintPlanted(file: string, source: string): Promise<LintResult> {
    await mkdir(path.join(dir, path.dirname(file)), { recursive: true });
    await writeFile(path.join(dir, file), source);
    // The copy is no git repository, so the config's VCS integration is switched off.
    return lint(dir, ['--vcs-enabled=false', file]);
  }

  function assertRefused(result: LintResult, file: string, folder: string): void {
    assert.notEqual(result.code, 0, `the lint must fail: ${result.output}`);
    const refusals = result.diagnostics.filter((diagnostic) => diagnostic.category === RULE);
    assert.equal(refusals.length, 1, result.output);
    assert.equal(refusals[0]?.location.path, file);
    assert.match(refusals[0]?.message ?? '', /^VLT-7: operator secrets and customer credentials stay apart/);
    assert.ok(refusals[0]?.message.includes(folder), refusals[0]?.message);
  }

  test('VLT-7: a vault module importing operator secrets fails the lint', async () => {
    const file = 'src/vault/planted.ts';
    const result = await lintPlanted(
      file,
      "import { loadOperatorSecret } from '../operator-secrets/secrets.ts';\n\nexport const load = loadOperatorSecret;\n",
    );
    assertRefused(result, file, 'src/operator-secrets/');
  });

  test('VLT-7: a deeper vault module re-exporting or dynamically importing operator secrets fails the lint', async () => {
    const reexport = 'src/vault/providers/planted-reexport.ts';
    assertRefused(
      await lintPlanted(reexport, "export { loadSmtpUrl } from '../../operator-secrets/smtp-url.ts';\n"),
      reexport,
      'src/operator-secrets/',
    );
    const dynamic = 'src/vault/providers/planted-dynamic.ts';
    assertRefused(
      await lintPlanted(
        dynamic,
        "export const keys = await import('../../operator-secrets/checkpoint-key.ts');\n",
      ),
      dynamic,
      'src/operator-secrets/',
    );
  });

  test('VLT-7: an operator-secrets module importing the vault fails the lint', async () => {
    const file = 'src/operator-secrets/planted.ts';
    const result = await lintPlanted(
      file,
      "import { openEnvelope } from '../vault/whatever.ts';\n\nexport const open = openEnvelope;\n",
    );
    assertRefused(result, file, 'src/vault/');
  });

  test('VLT-7: the same import from an unrelated module passes the lint, so the failures above are the rule', async () => {
    const result = await lintPlanted(
      'src/http/planted.ts',
      "import { loadOperatorSecret } from '../operator-secrets/secrets.ts';\n\nexport const load = loadOperatorSecret;\n",
    );
    assert.equal(result.code, 0, result.output);
    assert.deepEqual(result.diagnostics, []);
  });

  test('VLT-7: nothing in the real src/vault and src/operator-secrets imports across the line', async () => {
    const folders = ['src/vault', 'src/operator-secrets'].filter((folder) =>
      existsSync(path.join(ROOT, folder)),
    );
    // Only this rule: other lint findings in work under way are not this control's business.
    const result = await lint(ROOT, [`--only=style/noRestrictedImports`, ...folders]);
    assert.deepEqual(
      result.diagnostics.filter((diagnostic) => diagnostic.category === RULE),
      [],
      result.output,
    );
    assert.equal(result.code, 0, result.output);
  });
});
