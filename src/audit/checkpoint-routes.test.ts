import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { createAccount, type TestAccount } from '../../test/helpers/accounts.ts';
import { type ProblemBody, useTestApp } from '../../test/helpers/app.ts';
import { appendEvents } from '../../test/helpers/audit.ts';
import { createCheckpointService } from './checkpoint-log.ts';
import { headLeafHash } from './leaf.ts';
import { verifyConsistency, verifyInclusion } from './merkle.ts';
import { verifyCheckpoint } from './note.ts';
import { verifyBundleFile } from './verify-cli.ts';

// AUD-4, AUD-5, AUD-8 over HTTP: anyone can fetch the signed checkpoints and
// the key that verifies them; a signed-in user gets its tenant's proofs and
// recovery bundle, and nothing of another tenant.

const dir = path.join(tmpdir(), `enclave-checkpoint-routes-${randomBytes(6).toString('hex')}`);
const ctx = useTestApp({ ENCLAVE_DATA_DIR: dir, ENCLAVE_PUBLIC_URL: 'https://enclave.test' });
ctx.after(() => rm(dir, { recursive: true, force: true }));

const ORIGIN = 'enclave.test/enclave/audit';
let alice: TestAccount;
let bob: TestAccount;

ctx.before(async () => {
  alice = await createAccount(ctx.db, ctx.testApp);
  bob = await createAccount(ctx.db, ctx.testApp);
  await appendEvents(ctx.db, alice.user.tenant_id, 3);
  await appendEvents(ctx.db, bob.user.tenant_id, 2);
});

const checkpoint = () =>
  createCheckpointService({
    sql: ctx.db.app,
    signing: ctx.testApp.audit.signing,
    publisher: ctx.testApp.audit.publisher,
    logger: { info: () => {}, error: () => {} },
  }).makeCheckpoint();
const get = (url: string, account?: TestAccount) =>
  ctx.testApp.app.inject({
    method: 'GET',
    url,
    headers: account === undefined ? {} : { authorization: `Bearer ${account.apiToken}` },
  });

describe('checkpoint routes', () => {
  test('AUD-4: before the first checkpoint, /audit/checkpoint answers 404', async () => {
    const response = await get('/audit/checkpoint');
    assert.equal(response.statusCode, 404);
    assert.equal(response.json<ProblemBody>().code, 'not_found');
  });

  test('AUD-4: the latest checkpoint, each checkpoint by size and the verifier key are public, and the note verifies with that key', async () => {
    const made = await checkpoint();
    const latest = await get('/audit/checkpoint');
    assert.equal(latest.statusCode, 200);
    assert.match(latest.headers['content-type'] ?? '', /^text\/plain/);
    assert.equal(latest.body, made.checkpoint.note);
    const key = await get('/.well-known/enclave-checkpoint-key');
    assert.equal(key.statusCode, 200);
    assert.equal(key.body, `${ctx.testApp.audit.signing.verifierKey}\n`);
    const opened = verifyCheckpoint(latest.body, key.body.trim(), ORIGIN);
    assert.equal(opened.size, made.checkpoint.size);
    const bySize = await get(`/audit/checkpoints/${made.checkpoint.size}`);
    assert.equal(bySize.body, made.checkpoint.note);
    assert.match(bySize.headers['cache-control'] ?? '', /immutable/);
    assert.equal((await get('/audit/checkpoints/99999')).statusCode, 404);
    assert.equal((await get('/audit/checkpoints/abc')).statusCode, 400);
  });

  test('AUD-4: /api/v1/audit/proof needs a signed-in user and proves that user’s own tenant head is in the latest checkpoint', async () => {
    assert.equal((await get('/api/v1/audit/proof')).statusCode, 401);
    await appendEvents(ctx.db, alice.user.tenant_id, 1);
    const made = await checkpoint();
    const response = await get('/api/v1/audit/proof', alice);
    assert.equal(response.statusCode, 200);
    const body = response.json<{
      checkpoint: { size: string; root: string; note: string };
      leaf: { index: string; tenant: string; seq: number; hash: string };
      inclusion_proof: string[];
    }>();
    assert.equal(body.checkpoint.size, made.checkpoint.size.toString());
    assert.equal(body.leaf.tenant, alice.user.tenant_id);
    const leafHash = headLeafHash({
      tenant: body.leaf.tenant,
      seq: body.leaf.seq,
      hash: Buffer.from(body.leaf.hash, 'hex'),
    });
    verifyInclusion(
      BigInt(body.leaf.index),
      BigInt(body.checkpoint.size),
      leafHash,
      body.inclusion_proof.map((hash) => Buffer.from(hash, 'base64')),
      Buffer.from(body.checkpoint.root, 'base64'),
    );
    const bobs = (await get('/api/v1/audit/proof', bob)).json<{ leaf: { tenant: string } }>();
    assert.equal(bobs.leaf.tenant, bob.user.tenant_id);
  });

  test('AUD-8: /api/v1/audit/proof gives a consistency proof between two checkpoint sizes, and refuses sizes that are not checkpoints', async () => {
    const first = (await checkpoint()).checkpoint;
    await appendEvents(ctx.db, bob.user.tenant_id, 1);
    const second = (await checkpoint()).checkpoint;
    const response = await get(`/api/v1/audit/proof?old_size=${first.size}&new_size=${second.size}`, alice);
    assert.equal(response.statusCode, 200);
    const { consistency } = response.json<{ consistency: { proof: string[] } }>();
    verifyConsistency(
      first.size,
      second.size,
      first.root,
      second.root,
      consistency.proof.map((hash) => Buffer.from(hash, 'base64')),
    );
    assert.equal(
      (await get(`/api/v1/audit/proof?old_size=${second.size}&new_size=${first.size}`, alice)).statusCode,
      400,
    );
    assert.equal((await get('/api/v1/audit/proof?old_size=99998&new_size=99999', alice)).statusCode, 404);
    assert.equal((await get('/api/v1/audit/proof?old_size=x', alice)).statusCode, 400);
  });

  test('AUD-5: /api/v1/audit/bundle downloads the signed-in tenant’s recovery bundle, which enclave-verify accepts with the published key pinned', async () => {
    assert.equal((await get('/api/v1/audit/bundle')).statusCode, 401);
    await checkpoint();
    const response = await get('/api/v1/audit/bundle', alice);
    assert.equal(response.statusCode, 200);
    assert.match(response.headers['content-type'] ?? '', /^application\/x-ndjson/);
    assert.match(response.headers['content-disposition'] ?? '', /attachment; filename="enclave-audit-/);
    const file = path.join(tmpdir(), `enclave-bundle-${randomBytes(6).toString('hex')}.jsonl`);
    await writeFile(file, response.body);
    try {
      const report = await verifyBundleFile(file, { pinnedKey: ctx.testApp.audit.signing.verifierKey });
      assert.deepEqual(report.problems, []);
      assert.equal(report.tenant, alice.user.tenant_id);
      assert.ok(report.eventsVerified >= 4);
      const header = JSON.parse(response.body.split('\n')[0] ?? '{}') as { tenant: string };
      assert.equal(header.tenant, alice.user.tenant_id, 'only the signed-in tenant’s chain');
      assert.ok(!response.body.includes(bob.user.tenant_id), 'nothing of another tenant');
    } finally {
      await rm(file, { force: true });
    }
  });

  test('AUD-4: proofs and bundles are rate-limited per user (60 a minute): past that, 429 problem+json, and other users are not affected', async () => {
    const carol = await createAccount(ctx.db, ctx.testApp);
    for (let i = 0; i < 60; i++) await ctx.testApp.rateLimits.consume('audit_proof', carol.user.id);
    for (const url of ['/api/v1/audit/proof', '/api/v1/audit/bundle']) {
      const limited = await get(url, carol);
      assert.equal(limited.statusCode, 429, url);
      assert.equal(limited.json<ProblemBody>().code, 'rate_limited');
      assert.ok(Number(limited.headers['retry-after']) > 0);
    }
    assert.equal((await get('/api/v1/audit/proof', alice)).statusCode, 200);
  });
});
