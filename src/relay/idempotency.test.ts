import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify from 'fastify';
import { Type } from 'typebox';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import { serviceQuery, withTenant } from '../db/tenant.ts';
import { registerProblemHandlers } from '../http/problems.ts';
import { deleteExpiredIdempotencyKeys, parseIdempotencyKey, runIdempotent } from './idempotency.ts';

// A test-only route that creates one row per run, behind runIdempotent, on an
// app with the real problem handler: what the relay's thread routes will do.

let db: TestDatabase;
let tenantId: string;
let otherTenantId: string;
/** Runs of the route's handler (not replays). */
let executions = 0;
/** While set, the handler waits on it: keeps the first request in flight. */
let gate: Promise<void> | undefined;
/** The handler's next run throws. */
let failNext = false;
const app = Fastify().withTypeProvider<TypeBoxTypeProvider>();

before(async () => {
  db = await createTestDatabase();
  await db.superuser`create table test_effects (tenant_id uuid not null, label text not null)`;
  await db.superuser`grant select, insert on test_effects to enclave_app`;
  const tenants = await db.superuser<{ id: string }[]>`
    insert into tenants (name) values ('idempotency a'), ('idempotency b') returning id`;
  tenantId = tenants[0]?.id ?? '';
  otherTenantId = tenants[1]?.id ?? '';
  registerProblemHandlers(app);
  app.post(
    '/things/:tenant',
    {
      schema: {
        params: Type.Object({ tenant: Type.String() }),
        body: Type.Object({ label: Type.String({ maxLength: 100 }) }, { additionalProperties: false }),
      },
    },
    async (request, reply) => {
      const tenant = request.params.tenant === 'b' ? otherTenantId : tenantId;
      const scope = { tenantId: tenant, scope: `test:${request.headers['x-scope'] ?? 'alice'}` };
      const answer = await runIdempotent(db.app, request, scope, { required: true }, async (tx) => {
        executions += 1;
        if (gate !== undefined) await gate;
        await tx`insert into test_effects (tenant_id, label) values (${tenant}::uuid, ${request.body.label})`;
        if (failNext) {
          failNext = false;
          throw new Error('the handler failed after its insert');
        }
        return { status: 201, body: { label: request.body.label, run: executions } };
      });
      return reply.status(answer.status).send(answer.body);
    },
  );
  await app.ready();
});
after(async () => {
  await app.close();
  await db.drop();
});
beforeEach(async () => {
  executions = 0;
  gate = undefined;
  failNext = false;
  await db.superuser`delete from test_effects`;
  await db.superuser`delete from idempotency_keys`;
});

function post(key: string | undefined, body: unknown = { label: 'one' }, extra: Record<string, string> = {}) {
  return app.inject({
    method: 'POST',
    url: extra.url ?? '/things/a',
    headers: {
      ...(key === undefined ? {} : { 'idempotency-key': key }),
      ...(extra.scope ? { 'x-scope': extra.scope } : {}),
    },
    payload: body as object,
  });
}

async function effects(): Promise<number> {
  const [row] = await db.superuser<{ n: number }[]>`select count(*)::int as n from test_effects`;
  return row?.n ?? -1;
}

describe('RLY-6: idempotency keys', () => {
  test('RLY-6: a replay with the same key and body returns the original status and body and creates nothing', async () => {
    const first = await post('"k-1"');
    assert.equal(first.statusCode, 201);
    const replay = await post('"k-1"');
    assert.equal(replay.statusCode, 201);
    assert.equal(replay.body, first.body);
    assert.equal(executions, 1);
    assert.equal(await effects(), 1);
    const [row] = await db.superuser<{ state: string; status: number; hours: number }[]>`
      select state, status, extract(epoch from expires_at - created_at)::int / 3600 as hours
      from idempotency_keys where key = 'k-1'`;
    assert.deepEqual(row, { state: 'done', status: 201, hours: 24 });
  });

  test('RLY-6: the same key with another body or path is 422 and creates nothing', async () => {
    assert.equal((await post('"k"')).statusCode, 201);
    const otherBody = await post('"k"', { label: 'other' });
    assert.equal(otherBody.statusCode, 422);
    assert.equal(otherBody.json().code, 'idempotency_key_reused');
    assert.equal(otherBody.headers['content-type'], 'application/problem+json');
    const otherPath = await post('"k"', { label: 'one' }, { url: '/things/a?x=1' });
    assert.equal(otherPath.statusCode, 422);
    assert.equal(executions, 1);
    assert.equal(await effects(), 1);
  });

  test('RLY-6: a replay while the first request is in flight is 409; once it is done, the replay gets its answer', async () => {
    const release = Promise.withResolvers<void>();
    gate = release.promise;
    const first = post('"slow"');
    // Bounded wait, a safety net only: the claim is committed before the handler runs.
    for (let i = 0; i < 200 && executions === 0; i += 1) await new Promise((r) => setTimeout(r, 10));
    assert.equal(executions, 1);
    const during = await post('"slow"');
    assert.equal(during.statusCode, 409);
    assert.equal(during.json().code, 'idempotency_request_in_flight');
    release.resolve();
    const done = await first;
    assert.equal(done.statusCode, 201);
    const replay = await post('"slow"');
    assert.equal(replay.statusCode, 201);
    assert.equal(replay.body, done.body);
    assert.equal(await effects(), 1);
  });

  test('RLY-6: 20 concurrent identical requests run the handler once: one creates, the rest get 409 or the replay', async () => {
    const answers = await Promise.all(Array.from({ length: 20 }, () => post('"burst"', { label: 'burst' })));
    const statuses = answers.map((answer) => answer.statusCode);
    assert.ok(
      statuses.every((status) => status === 201 || status === 409),
      statuses.join(','),
    );
    const created = answers.filter((answer) => answer.statusCode === 201);
    assert.ok(created.length >= 1);
    assert.ok(created.every((answer) => answer.body === created[0]?.body));
    assert.equal(executions, 1);
    assert.equal(await effects(), 1);
    const [keys] = await db.superuser<{ n: number }[]>`select count(*)::int as n from idempotency_keys`;
    assert.equal(keys?.n, 1);
  });

  test('RLY-6: a malformed or missing key is 400 naming the header, and nothing is created', async () => {
    const malformed = [
      'unquoted',
      '""',
      `"${'a'.repeat(256)}"`,
      '"caf\u00e9"',
      '"a" "b"',
      '"a";x=1',
      '"a\\n"',
      '"open',
      '"tab\there"',
    ];
    for (const key of malformed) {
      const answer = await post(key);
      assert.equal(answer.statusCode, 400, key);
      assert.equal(answer.json().code, 'idempotency_key_invalid', key);
      assert.deepEqual(answer.json().errors?.[0]?.field, 'headers/idempotency-key', key);
    }
    assert.equal((await post(undefined)).statusCode, 400);
    assert.equal(executions, 0);
    assert.equal(await effects(), 0);
    const [keys] = await db.superuser<{ n: number }[]>`select count(*)::int as n from idempotency_keys`;
    assert.equal(keys?.n, 0);
  });

  test('RLY-6: the key is the sf-string value: escapes are undone, 255 characters pass', () => {
    assert.equal(parseIdempotencyKey(' "a\\"b\\\\c" '), 'a"b\\c');
    assert.equal(parseIdempotencyKey(`"${'z'.repeat(255)}"`).length, 255);
    assert.equal(
      parseIdempotencyKey('"8e03978e-40d5-43e8-bc93-6894a57f9324"'),
      '8e03978e-40d5-43e8-bc93-6894a57f9324',
    );
  });

  test('RLY-6: a key older than 24 hours is treated as new, and the cleanup deletes expired keys', async () => {
    assert.equal((await post('"old"')).statusCode, 201);
    assert.equal((await post('"fresh"', { label: 'fresh' })).statusCode, 201);
    await db.superuser`update idempotency_keys set created_at = created_at - interval '25 hours', expires_at = expires_at - interval '25 hours' where key = 'old'`;
    const again = await post('"old"', { label: 'changed' });
    assert.equal(again.statusCode, 201);
    assert.equal(executions, 3);
    assert.equal(await effects(), 3);
    await db.superuser`update idempotency_keys set expires_at = now() - interval '1 second' where key = 'fresh'`;
    const deleted = await serviceQuery(
      db.app,
      { tenantId, reason: 'delete expired idempotency keys' },
      (tx) => deleteExpiredIdempotencyKeys(tx, { now: new Date(), limit: 100 }),
    );
    assert.equal(deleted, 1);
    const left = await db.superuser<{ key: string }[]>`select key from idempotency_keys order by key`;
    assert.deepEqual(
      left.map((row) => row.key),
      ['old'],
    );
  });

  test('RLY-6: a request that fails releases its key, with nothing created, so a retry runs', async () => {
    failNext = true;
    const failed = await post('"retry"');
    assert.equal(failed.statusCode, 500);
    assert.equal(await effects(), 0);
    const retried = await post('"retry"');
    assert.equal(retried.statusCode, 201);
    assert.equal(await effects(), 1);
  });

  test('RLY-6: an in-flight claim whose request died is taken over after its lease', async () => {
    assert.equal((await post('"dead"')).statusCode, 201);
    // As a crashed process leaves it: claimed, never completed, nothing created.
    await db.superuser`delete from test_effects`;
    await db.superuser`
      update idempotency_keys
      set state = 'in_flight', status = null, response_body = null, lease_until = now() + interval '1 minute'
      where key = 'dead'`;
    assert.equal((await post('"dead"')).statusCode, 409);
    await db.superuser`update idempotency_keys set lease_until = now() - interval '1 second' where key = 'dead'`;
    const takenOver = await post('"dead"');
    assert.equal(takenOver.statusCode, 201);
    assert.equal(await effects(), 1);
  });

  test('RLY-6: keys are per scope and per tenant: the same key of another caller or tenant runs on its own', async () => {
    assert.equal((await post('"shared"')).statusCode, 201);
    assert.equal((await post('"shared"', { label: 'one' }, { scope: 'bob' })).statusCode, 201);
    assert.equal((await post('"shared"', { label: 'one' }, { url: '/things/b' })).statusCode, 201);
    assert.equal(executions, 3);
    // Row-level security: tenant a sees only its own two keys.
    const seen = await withTenant(
      db.app,
      tenantId,
      (tx) => tx<{ scope: string }[]>`select scope from idempotency_keys order by scope`,
    );
    assert.deepEqual(
      seen.map((row) => row.scope),
      ['test:alice', 'test:bob'],
    );
  });
});
