import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { base64url, createLocalJWKSet, flattenedVerify } from 'jose';
import { useTestApp } from '../../test/helpers/app.ts';
import { appendEvents, createTenant, tempAuditSetup } from '../../test/helpers/audit.ts';
import { createCheckpointService } from '../audit/checkpoint-log.ts';
import { canonicalEvent, parseCanonicalEvent } from '../audit/event.ts';
import { recordDrill } from '../backup/drill-record.ts';
import { ConfigError, loadConfig } from '../config.ts';
import {
  declaresTitle,
  loadControls,
  parseControlRows,
  REPO_ROOT,
  titlePatterns,
} from './controls-catalog.ts';
import { SIGNATURE_HEADER } from './routes.ts';
import { runVerifier } from './runs.ts';
import type { SecurityDocument } from './security-document.ts';
import { createPostureService } from './verifiers.ts';

// OPS-5: /security and /security.json say what docs/controls.md says, show
// the verifier runs as they were recorded, and the JSON verifies — with jose
// and the JWKS only, as a buyer would — against the operator key.

const CONTACT = 'security@enclave.test';
const logger = { info: () => {}, error: () => {} };

/** The text of a fragment of the page, as a reader sees it: tags dropped, entities undone. */
const textOf = (fragment: string): string =>
  fragment
    .replace(/<[^>]*>/g, '')
    .replaceAll('&lt;', '<')
    .replaceAll('&gt;', '>')
    .replaceAll('&quot;', '"')
    .replaceAll('&#39;', "'")
    .replaceAll('&amp;', '&');

/** The signature as a buyer checks it: the fetched bytes, the detached JWS, the published key set. */
async function verifyDetached(body: Buffer, jws: string, jwks: Parameters<typeof createLocalJWKSet>[0]) {
  const [protectedHeader = '', payload, signature = ''] = jws.split('.');
  assert.equal(payload, '', 'the payload is detached');
  return flattenedVerify(
    { protected: protectedHeader, payload: base64url.encode(body), signature },
    createLocalJWKSet(jwks),
  );
}

describe('the signed document', () => {
  const ctx = useTestApp({ ENCLAVE_SECURITY_CONTACT: CONTACT });

  test('OPS-5: /security.json verifies with jose against /.well-known/jwks.json; one changed byte fails the check', async () => {
    const { app } = ctx.testApp;
    const response = await app.inject({ method: 'GET', url: '/security.json' });
    assert.equal(response.statusCode, 200);
    assert.match(String(response.headers['content-type']), /^application\/json/);
    const jwks = (await app.inject({ method: 'GET', url: '/.well-known/jwks.json' })).json();
    const jws = String(response.headers[SIGNATURE_HEADER]);
    const body = response.rawPayload;
    const verified = await verifyDetached(body, jws, jwks);
    assert.equal(verified.protectedHeader?.alg, 'EdDSA');
    assert.equal(verified.protectedHeader?.kid, jwks.keys[0].kid);
    const companion = await app.inject({ method: 'GET', url: '/security.json.sig' });
    assert.equal(companion.body, jws, 'the companion URL serves the same signature');
    for (const at of [0, Math.floor(body.length / 2), body.length - 1]) {
      const altered = Buffer.from(body);
      altered[at] = (altered[at] ?? 0) ^ 0x01;
      await assert.rejects(
        verifyDetached(altered, jws, jwks),
        /signature verification failed/,
        `byte ${at} changed`,
      );
    }
  });

  test('OPS-5: /security.json carries every control of docs/controls.md, a run entry for each verifier (not_run before the first), the latest checkpoint and the SBOM digest or null', async () => {
    const document = (
      await ctx.testApp.app.inject({ method: 'GET', url: '/security.json' })
    ).json<SecurityDocument>();
    const rows = parseControlRows(await readFile(path.join(REPO_ROOT, 'docs', 'controls.md'), 'utf8'));
    assert.deepEqual(
      document.controls.map((control) => [control.id, control.documented_status, control.promise]),
      rows.map((row) => [row.id, row.documented, row.promise]),
    );
    assert.deepEqual(
      document.posture.map((run) => [run.check, run.result]),
      ['chain_integrity', 'tenant_isolation', 'retention_slo', 'key_hygiene', 'checkpoint_freshness'].map(
        (check) => [check, 'not_run'],
      ),
    );
    assert.equal(document.format, 'enclave-security/1');
    assert.equal(document.contact, `mailto:${CONTACT}`);
    assert.equal(document.checkpoint, null);
    assert.equal(document.backup_drill, null, 'no drill yet: null, never a pass');
    assert.ok(document.sbom === null || /^[0-9a-f]{64}$/.test(document.sbom.sha256));
  });

  test('OPS-5: /.well-known/security.txt has Contact, Expires under a year ahead, Canonical and Policy (RFC 9116)', async () => {
    const response = await ctx.testApp.app.inject({ method: 'GET', url: '/.well-known/security.txt' });
    assert.equal(response.statusCode, 200);
    assert.match(String(response.headers['content-type']), /^text\/plain/);
    const fields = new Map(
      response.body
        .trim()
        .split('\n')
        .map((line) => line.split(': ', 2) as [string, string]),
    );
    assert.equal(fields.get('Contact'), `mailto:${CONTACT}`);
    const expires = Date.parse(fields.get('Expires') ?? '');
    assert.ok(
      expires > Date.now() && expires < Date.now() + 365 * 86_400_000,
      'Expires is ahead, within a year',
    );
    assert.equal(fields.get('Canonical'), `${ctx.testApp.config.publicUrl}/.well-known/security.txt`);
    assert.equal(fields.get('Policy'), `${ctx.testApp.config.publicUrl}/security`);
  });
});

describe('the page', () => {
  const ctx = useTestApp();

  test('OPS-5: a tampered audit row turns the chain-integrity run red for that tenant and seq, on /security and in /security.json; a verifier that threw reads ERROR', async (t) => {
    const { db, testApp } = ctx;
    const { setup, dir } = await tempAuditSetup();
    t.after(() => rm(dir, { recursive: true, force: true }));
    const tenant = await createTenant(db);
    await appendEvents(db, tenant, 5);
    const { signing, publisher } = setup;
    await createCheckpointService({ sql: db.app, signing, publisher, logger }).makeCheckpoint();
    await db.superuser.begin(async (tx) => {
      await tx`set local session_replication_role = replica`;
      const [row] = await tx<{ canonical: string }[]>`
        select canonical from audit_events where tenant_id = ${tenant}::uuid and seq = 2`;
      assert.ok(row);
      const forged = canonicalEvent({ ...parseCanonicalEvent(row.canonical), data: { n: 'forged' } });
      await tx`update audit_events set canonical = ${forged} where tenant_id = ${tenant}::uuid and seq = 2`;
    });
    await createPostureService({ sql: db.app, audit: setup }).run('chain_integrity');
    await runVerifier(db.app, 'key_hygiene', async () => {
      throw new Error('vault unreachable');
    });
    const document = (
      await testApp.app.inject({ method: 'GET', url: '/security.json' })
    ).json<SecurityDocument>();
    const chain = document.posture.find((run) => run.check === 'chain_integrity');
    assert.ok(chain !== undefined);
    assert.equal(chain.result, 'failed');
    const failure = chain.details.first_failure as { tenant: string; seq: number };
    assert.deepEqual([failure.tenant, failure.seq], [tenant, 2]);
    assert.match(chain?.summary ?? '', new RegExp(`tenant ${tenant} at seq 2`));
    assert.equal(document.posture.find((run) => run.check === 'key_hygiene')?.result, 'error');
    assert.equal(document.checkpoint?.size, '1');

    const page = await testApp.app.inject({ method: 'GET', url: '/security' });
    assert.equal(page.statusCode, 200);
    assert.doesNotMatch(page.body, /<script/i, 'no script on the page');
    const row =
      /<tr class="result-failed" id="posture-chain_integrity">(.*?)<\/tr>/s.exec(page.body)?.[1] ?? '';
    assert.match(row, /FAILED/);
    assert.match(row, new RegExp(`tenant ${tenant} at seq 2`));
    const errored =
      /<tr class="result-error" id="posture-key_hygiene">(.*?)<\/tr>/s.exec(page.body)?.[1] ?? '';
    assert.match(errored, /ERROR/);
    assert.match(errored, /vault unreachable/);
    assert.doesNotMatch(errored, />pass</);
  });

  test('OPS-5: /security shows each control of docs/controls.md with its status, promise, code and named tests as the document has them, and says what Enclave does not do; without a contact, security.txt is 404', async () => {
    const { app } = ctx.testApp;
    const page = (await app.inject({ method: 'GET', url: '/security' })).body;
    const document = (await app.inject({ method: 'GET', url: '/security.json' })).json<SecurityDocument>();
    const rows = parseControlRows(await readFile(path.join(REPO_ROOT, 'docs', 'controls.md'), 'utf8'));
    assert.deepEqual(
      document.controls.map((control) => control.id),
      rows.map((row) => row.id),
    );
    // Markdown code spans become <code>: compare the text a reader sees with the cell's text.
    const shown = (markdown: string) => markdown.replaceAll('`', '');
    for (const [index, control] of document.controls.entries()) {
      const row = new RegExp(
        `<tr id="control-${control.id}"><td>${control.id}</td><td>${control.status}[<]`,
      ).exec(page);
      assert.ok(row, `${control.id} is on the page as ${control.status}`);
      const doc = rows[index];
      assert.ok(doc);
      const html = new RegExp(`<tr id="control-${control.id}">(.*?)</tr>`, 's').exec(page)?.[1] ?? '';
      const [, promise = '', code = '', tests = ''] =
        /^<td>[^<]*<\/td><td>.*?<\/td><td>(.*?)\n<details><summary>[^<]*<\/summary>\n<p>Enforced in: (.*?)<\/p>(.*)<\/details>/s.exec(
          html,
        ) ?? [];
      assert.equal(textOf(promise), shown(doc.promise), `${control.id}: promise`);
      assert.equal(textOf(code), shown(doc.code), `${control.id}: code`);
      const files = [...tests.matchAll(/<p><code>(.*?)<\/code><\/p><ul>(.*?)<\/ul>/gs)].map(
        ([, file = '', titles = '']) => ({
          file: textOf(file),
          titles: [...titles.matchAll(/<li>(.*?)<\/li>/gs)].map(([, title = '']) => textOf(title)),
        }),
      );
      assert.deepEqual(files, doc.tests, `${control.id}: tests`);
    }
    assert.match(page, /<h2 id="not-done">3\. What Enclave does not do<\/h2>/);
    assert.match(page, /no SOC 2/);
    assert.match(page, /has not published a security contact/);
    assert.equal((await app.inject({ method: 'GET', url: '/.well-known/security.txt' })).statusCode, 404);
  });
});

describe('stale runs', () => {
  const ctx = useTestApp({ ENCLAVE_POSTURE_INTERVAL_MINUTES: '5' });

  test('OPS-5: a latest run older than twice ENCLAVE_POSTURE_INTERVAL_MINUTES is stale in /security.json and reads STALE on /security, never as a plain pass; a recent run is not stale', async () => {
    const { db, testApp } = ctx;
    const recordPass = (check: string, minutesAgo: number) => {
      const finished = new Date(Date.now() - minutesAgo * 60_000);
      return db.app`
        insert into posture_runs (check_name, result, started_at, finished_at, duration_ms, details)
        values (${check}, 'pass', ${new Date(finished.getTime() - 1000)}, ${finished}, 1000,
                ${db.app.json({ summary: 'all good' })})`;
    };
    // Every 5 minutes: stale past 10. The chain verifier stopped 11 minutes ago; key hygiene ran 3 minutes ago.
    await recordPass('chain_integrity', 11);
    await recordPass('key_hygiene', 3);
    const document = (
      await testApp.app.inject({ method: 'GET', url: '/security.json' })
    ).json<SecurityDocument>();
    assert.equal(document.posture_interval_minutes, 5);
    assert.deepEqual(
      document.posture.map((run) => [run.check, run.result, run.stale]),
      [
        ['chain_integrity', 'pass', true],
        ['tenant_isolation', 'not_run', false],
        ['retention_slo', 'not_run', false],
        ['key_hygiene', 'pass', false],
        ['checkpoint_freshness', 'not_run', false],
      ],
    );
    const page = (await testApp.app.inject({ method: 'GET', url: '/security' })).body;
    assert.match(page, /They run every 5 minutes in the job worker/);
    const stale = /<tr class="result-stale" id="posture-chain_integrity">(.*?)<\/tr>/s.exec(page)?.[1] ?? '';
    assert.match(stale, /<strong>STALE<\/strong>/);
    assert.match(stale, /last result pass, over 10 minutes old/);
    assert.doesNotMatch(stale, /<strong>pass<\/strong>/);
    const fresh = /<tr class="result-pass" id="posture-key_hygiene">(.*?)<\/tr>/s.exec(page)?.[1] ?? '';
    assert.match(fresh, /<strong>pass<\/strong>/);
  });
});

describe('the backup drill', () => {
  const ctx = useTestApp();

  test('OPS-4: /security and /security.json show the latest drill: its finish time, its result and the checks that failed', async () => {
    const { db, testApp } = ctx;
    const passed = new Date(Date.now() - 86_400_000);
    await recordDrill(db.app, {
      ok: true,
      startedAt: passed,
      finishedAt: new Date(passed.getTime() + 4000),
      checks: [{ name: 'backup', ok: true, detail: '12 tables, 40 rows' }],
    });
    const failedAt = new Date(Date.now() - 3_600_000);
    await recordDrill(db.app, {
      ok: false,
      startedAt: failedAt,
      finishedAt: new Date(failedAt.getTime() + 2500),
      checks: [
        { name: 'backup', ok: true, detail: '12 tables, 40 rows' },
        { name: 'audit chains', ok: false, detail: 'tenant 7f0e broke at seq 3' },
      ],
    });
    const document = (
      await testApp.app.inject({ method: 'GET', url: '/security.json' })
    ).json<SecurityDocument>();
    assert.equal(document.backup_drill?.ok, false, 'the latest drill, not the earlier pass');
    assert.equal(document.backup_drill?.finished_at, new Date(failedAt.getTime() + 2500).toISOString());
    assert.deepEqual(
      document.backup_drill?.checks.map((check) => [check.name, check.ok]),
      [
        ['backup', true],
        ['audit chains', false],
      ],
    );
    const page = (await testApp.app.inject({ method: 'GET', url: '/security' })).body;
    const line = /<p id="backup-drill">(.*?)<\/p>/s.exec(page)?.[1] ?? '';
    assert.match(line, /<strong>FAILED<\/strong>/);
    assert.match(line, new RegExp(`datetime="${document.backup_drill?.finished_at}"`));
    assert.match(line, /audit chains \(tenant 7f0e broke at seq 3\)/);
  });
});

describe('the control catalog', () => {
  test('OPS-5: every control docs/controls.md calls enforced names tests, and every test title it names exists in the named file', async () => {
    const controls = await loadControls();
    assert.ok(controls.length > 50);
    const unproven = controls
      .filter((control) => control.missing.length > 0)
      .map((control) => `${control.id}: ${control.missing.join('; ')}`);
    assert.deepEqual(unproven, []);
    for (const control of controls.filter((c) => c.documented.startsWith('enforced'))) {
      assert.equal(control.status, 'enforced', control.id);
      assert.ok(
        control.tests.some((named) => named.titles.length > 0),
        `${control.id} names a test`,
      );
    }
  });

  test('OPS-5: a control whose named test does not exist, or names none, is shown as unproven, never enforced', async (t) => {
    const root = await mkdtemp(path.join(tmpdir(), 'enclave-controls-'));
    t.after(() => rm(root, { recursive: true, force: true }));
    await mkdir(path.join(root, 'docs'));
    await mkdir(path.join(root, 'test'));
    await writeFile(
      path.join(root, 'test', 'a.test.ts'),
      `test('XYZ-1: it holds', () => {});\ntest(\`XYZ-2: \${n} things hold\`, () => {});\n`,
    );
    await writeFile(
      path.join(root, 'docs', 'controls.md'),
      [
        '| ID | Status | Control (short) | Enforced in | Proven by |',
        '|---|---|---|---|---|',
        '| XYZ-1 | enforced | It holds | `src/a.ts` | `test/a.test.ts`: "XYZ-1: it holds" |',
        '| XYZ-2 | enforced | Things hold | `src/a.ts` | `test/a.test.ts`: "XYZ-2: 5 things hold" |',
        '| XYZ-3 | enforced | A test renamed | `src/a.ts` | `test/a.test.ts`: "XYZ-3: it held once" |',
        '| XYZ-4 | enforced | A file gone | `src/a.ts` | `test/gone.test.ts`: "XYZ-4: it holds" |',
        '| XYZ-5 | enforced | No test | `src/a.ts` | (none yet) |',
        '| XYZ-6 | partial: half | Half | `src/a.ts` | `test/a.test.ts`: "XYZ-1: it holds" |',
        '',
      ].join('\n'),
    );
    const controls = await loadControls(root);
    assert.deepEqual(
      controls.map((control) => [control.id, control.status]),
      [
        ['XYZ-1', 'enforced'],
        ['XYZ-2', 'enforced'],
        ['XYZ-3', 'unproven'],
        ['XYZ-4', 'unproven'],
        ['XYZ-5', 'unproven'],
        ['XYZ-6', 'partial'],
      ],
    );
  });

  test('OPS-5: a title found only in test.skip, test.todo, it.skip, a describe, skip or todo options, a string or a comment is shown as unproven', async (t) => {
    const root = await mkdtemp(path.join(tmpdir(), 'enclave-controls-'));
    t.after(() => rm(root, { recursive: true, force: true }));
    await mkdir(path.join(root, 'docs'));
    await mkdir(path.join(root, 'test'));
    const declared = [
      "test.skip('XYZ-1: skipped', () => {});",
      "test.todo('XYZ-2: to do');",
      "it.skip('XYZ-3: skipped too', () => {});",
      "describe('XYZ-4: a suite', () => {});",
      "test('XYZ-5: skipped by option', { skip: 'not yet' }, () => {});",
      "test('XYZ-6: to do by option', { todo: true }, () => {});",
      "// test('XYZ-7: commented out', () => {});",
      "/*\ntest('XYZ-8: in a block comment', () => {});\n*/",
      'const text = "test(\'XYZ-9: in a string\', () => {})";',
      // Run-time skips cannot be read from the source: these still count, as before.
      "test('XYZ-10: may skip', { skip: noBrowser }, async (t) => { t.skip('no browser'); });",
      `it(\`XYZ-11: \${'built'} from a template, \${n} ways\`, () => {});`,
    ];
    await writeFile(path.join(root, 'test', 'a.test.ts'), `${declared.join('\n')}\n`);
    const titles = [
      'XYZ-1: skipped',
      'XYZ-2: to do',
      'XYZ-3: skipped too',
      'XYZ-4: a suite',
      'XYZ-5: skipped by option',
      'XYZ-6: to do by option',
      'XYZ-7: commented out',
      'XYZ-8: in a block comment',
      'XYZ-9: in a string',
      'XYZ-10: may skip',
      'XYZ-11: built from a template, 3 ways',
    ];
    await writeFile(
      path.join(root, 'docs', 'controls.md'),
      [
        '| ID | Status | Control (short) | Enforced in | Proven by |',
        '|---|---|---|---|---|',
        ...titles.map(
          (title) =>
            `| ${title.split(':')[0]} | enforced | A rule | \`src/a.ts\` | \`test/a.test.ts\`: "${title}" |`,
        ),
        '',
      ].join('\n'),
    );
    const controls = await loadControls(root);
    assert.deepEqual(
      controls.map((control) => [control.id, control.status]),
      titles.map((title, index) => [title.split(':')[0], index < 9 ? 'unproven' : 'enforced']),
    );
  });

  test('OPS-5: titles match whole, or by their start where the document shortens them with …; a changed word does not match', () => {
    const patterns = titlePatterns(
      `test('ABC-1: the first rule holds, and the second too', () => {});\nit(\`ABC-2: as enclave_app, \\\`\${sql}\\\` is refused\`, () => {});`,
    );
    assert.equal(declaresTitle(patterns, 'ABC-1: the first rule holds, and the second too'), true);
    assert.equal(declaresTitle(patterns, 'ABC-1: the first rule holds, …'), true);
    assert.equal(declaresTitle(patterns, 'ABC-2: as enclave_app, … is refused'), true);
    assert.equal(
      declaresTitle(patterns, 'ABC-1: the first rule holds'),
      false,
      'a cut title without … is not the title',
    );
    assert.equal(declaresTitle(patterns, 'ABC-1: the first rule fails, and the second too'), false);
  });
});

describe('configuration', () => {
  test('OPS-5: ENCLAVE_SECURITY_CONTACT takes an address or an https URL; anything else stops start-up naming the variable', () => {
    const load = (value: string) =>
      loadConfig({ ENCLAVE_DATA_DIR: '/nonexistent', ENCLAVE_SECURITY_CONTACT: value }, '/');
    assert.equal(load('Security@Example.com').securityContact, 'mailto:security@example.com');
    assert.equal(load('https://example.com/report').securityContact, 'https://example.com/report');
    for (const bad of [
      'http://example.com/report',
      'javascript:alert(1)',
      'not a contact',
      'https://exa mple.com',
    ]) {
      assert.throws(
        () => load(bad),
        (error: unknown) => error instanceof ConfigError && /ENCLAVE_SECURITY_CONTACT/.test(error.message),
        bad,
      );
    }
  });
});
