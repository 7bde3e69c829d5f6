import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import { createAccount, type TestAccount } from '../../test/helpers/accounts.ts';
import { useTestApp } from '../../test/helpers/app.ts';
import { withTenant } from '../db/tenant.ts';
import { appendAuditEvent } from './append.ts';
import { verifyChain } from './chain.ts';
import { EXPORT_BATCH, exportAuditLog, readAuditHead } from './log.ts';

// AUD-6: a tenant reads its own audit log through the API, page by page,
// reads its head, and exports the whole chain as JSON lines that an offline
// verifier accepts. Row-level security keeps each tenant to its own chain
// (TEN-4): another tenant's events are never in a page, the head or an export.

const ctx = useTestApp();
let owner: TestAccount;
let other: TestAccount;
/** Events appended to the owner's tenant besides those signup and the token made: more than one export batch. */
const PADDING = EXPORT_BATCH * 2 + 37;

ctx.before(async () => {
  [owner, other] = [await createAccount(ctx.db, ctx.testApp), await createAccount(ctx.db, ctx.testApp)];
  const tenant = owner.user.tenant_id;
  await withTenant(ctx.db.app, tenant, async (tx) => {
    for (let n = 0; n < PADDING; n += 1) {
      await appendAuditEvent(tx, tenant, {
        actor: 'system',
        action: n % 10 === 0 ? 'test.tenth' : 'test.padding',
        target: null,
        data: { n, text: 'naïve ✓' },
      });
    }
  });
});

interface ApiEvent {
  seq: number;
  ts: string;
  actor: string;
  action: string;
  target: string | null;
  data: Record<string, unknown>;
  prev_hash: string;
  hash: string;
  canonical: string;
}

interface ExportLine extends ApiEvent {
  tenant: string;
}

function get(url: string, account: TestAccount) {
  return ctx.testApp.app.inject({
    method: 'GET',
    url,
    headers: { authorization: `Bearer ${account.apiToken}` },
  });
}

async function page(
  url: string,
  account: TestAccount,
): Promise<{ events: ApiEvent[]; next_after: number | null }> {
  const response = await get(url, account);
  assert.equal(response.statusCode, 200, response.body);
  return response.json();
}

async function allEvents(account: TestAccount, query = ''): Promise<ApiEvent[]> {
  const events: ApiEvent[] = [];
  let after: number | null = 0;
  while (after !== null) {
    const next = await page(`/api/v1/audit/events?after=${after}&limit=500${query}`, account);
    events.push(...next.events);
    after = next.next_after;
  }
  return events;
}

function parseExport(body: string): ExportLine[] {
  assert.ok(body.endsWith('\n'), 'every line ends with a newline');
  return body
    .slice(0, -1)
    .split('\n')
    .map((line) => JSON.parse(line) as ExportLine);
}

describe('GET /api/v1/audit/events', () => {
  test("AUD-6: a page holds the tenant's events in seq order with every field needed to verify, and they verify with verifyChain", async () => {
    const { events } = await page('/api/v1/audit/events?limit=5', owner);
    assert.deepEqual(
      events.map((event) => event.seq),
      [1, 2, 3, 4, 5],
    );
    assert.deepEqual(Object.keys(events[0] ?? {}).sort(), [
      'action',
      'actor',
      'canonical',
      'data',
      'hash',
      'prev_hash',
      'seq',
      'target',
      'ts',
    ]);
    assert.deepEqual(
      events.slice(0, 2).map((event) => event.action),
      ['tenant.created', 'account.created'],
    );
    assert.equal(events[0]?.prev_hash, '0'.repeat(64));
    for (const event of events) {
      assert.match(event.hash, /^[0-9a-f]{64}$/);
      const parsed = JSON.parse(event.canonical) as Record<string, unknown>;
      assert.deepEqual(
        { seq: parsed.seq, ts: parsed.ts, actor: parsed.actor, action: parsed.action, target: parsed.target },
        { seq: event.seq, ts: event.ts, actor: event.actor, action: event.action, target: event.target },
      );
    }
    const all = await allEvents(owner);
    const result = verifyChain(all, { tenant: owner.user.tenant_id });
    assert.deepEqual(result.ok && { ok: true, count: result.count }, { ok: true, count: all.length });
  });

  test('AUD-6: paging with after and limit walks the whole chain once; next_after is null at the head', async () => {
    const seen: number[] = [];
    let after: number | null = 0;
    let pages = 0;
    while (after !== null) {
      const next = await page(`/api/v1/audit/events?after=${after}&limit=100`, owner);
      seen.push(...next.events.map((event) => event.seq));
      if (next.next_after !== null) assert.equal(next.next_after, next.events.at(-1)?.seq);
      after = next.next_after;
      pages += 1;
    }
    const head = await page(`/api/v1/audit/events?after=${seen.length}`, owner);
    assert.deepEqual(head, { events: [], next_after: null });
    assert.deepEqual(
      seen,
      Array.from({ length: seen.length }, (_, i) => i + 1),
    );
    assert.ok(seen.length > PADDING);
    assert.equal(pages, Math.ceil(seen.length / 100));
    // The default page is 100 events.
    assert.equal((await page('/api/v1/audit/events', owner)).events.length, 100);
  });

  test('AUD-6: the action filter returns exactly the events with that action, paged the same way', async () => {
    const tenth = await allEvents(owner, '&action=test.tenth');
    assert.equal(tenth.length, Math.ceil(PADDING / 10));
    assert.ok(tenth.every((event) => event.action === 'test.tenth'));
    const firstTwo = await page('/api/v1/audit/events?action=test.tenth&limit=2', owner);
    assert.equal(firstTwo.next_after, firstTwo.events[1]?.seq);
    assert.deepEqual((await page('/api/v1/audit/events?action=no.such_action', owner)).events, []);
  });

  test('AUD-6: a limit outside 1..500, a negative or non-numeric after, a malformed action or an unknown parameter is a 400', async () => {
    for (const query of [
      'limit=0',
      'limit=501',
      'limit=ten',
      'after=-1',
      'after=abc',
      'after=1.5',
      'after=99999999999999999999',
      'action=Session.Login',
      'action=session',
      "action=session.login'--",
      'tenant=other',
    ]) {
      const response = await get(`/api/v1/audit/events?${query}`, owner);
      assert.equal(response.statusCode, 400, `${query}: ${response.body}`);
      assert.equal(response.json<{ code: string }>().code, 'validation_failed');
    }
    assert.equal((await get('/api/v1/audit/events?limit=500&after=0', owner)).statusCode, 200);
    assert.equal((await get('/api/v1/audit/events?limit=1', owner)).statusCode, 200);
  });

  test('AUD-6: without credentials the audit routes answer 401', async () => {
    for (const url of ['/api/v1/audit/events', '/api/v1/audit/head', '/api/v1/audit/export']) {
      const response = await ctx.testApp.app.inject({ method: 'GET', url });
      assert.equal(response.statusCode, 401, url);
    }
  });
});

describe('GET /api/v1/audit/head', () => {
  test("AUD-6: the head is the last event's seq and hash", async () => {
    const all = await allEvents(owner);
    const response = await get('/api/v1/audit/head', owner);
    assert.equal(response.statusCode, 200);
    assert.deepEqual(response.json(), { seq: all.at(-1)?.seq, hash: all.at(-1)?.hash });
  });

  test("AUD-6: before its first event a tenant's head is seq 0 and 64 zeros", async () => {
    const tenant = randomUUID();
    const head = await withTenant(ctx.db.app, tenant, async (tx) => {
      await tx`insert into tenants (id, name) values (${tenant}, 'empty')`;
      return readAuditHead(tx);
    });
    assert.deepEqual(head, { seq: 0, hash: '0'.repeat(64) });
  });
});

describe('GET /api/v1/audit/export', () => {
  test('AUD-6: the export is application/x-ndjson, one line per event in seq order with tenant, canonical, prev_hash and hash, and verifyChain accepts it', async () => {
    const response = await get('/api/v1/audit/export', owner);
    assert.equal(response.statusCode, 200, response.body);
    assert.match(String(response.headers['content-type']), /^application\/x-ndjson/);
    assert.equal(response.headers['cache-control'], 'no-store');
    const lines = parseExport(response.body);
    const head = (await get('/api/v1/audit/head', owner)).json<{ seq: number; hash: string }>();
    assert.equal(lines.length, head.seq);
    assert.deepEqual(
      lines.map((line) => line.seq),
      Array.from({ length: head.seq }, (_, i) => i + 1),
    );
    assert.ok(lines.every((line) => line.tenant === owner.user.tenant_id));
    assert.deepEqual(
      lines.slice(0, 3),
      (await page('/api/v1/audit/events?limit=3', owner)).events.map((event) => ({
        tenant: owner.user.tenant_id,
        ...event,
      })),
    );
    const result = verifyChain(lines, { tenant: owner.user.tenant_id });
    assert.equal(result.ok, true, JSON.stringify(result));
    assert.equal(result.ok && result.head.hash.toString('hex'), head.hash);
    // A tampered line is caught, so the acceptance above means something.
    const tampered = lines.map((line) =>
      line.seq === 7 ? { ...line, canonical: line.canonical.replace('"v":1', '"v":1 ') } : line,
    );
    assert.equal(verifyChain(tampered, { tenant: owner.user.tenant_id }).ok, false);
  });

  test('AUD-6: the export streams from one open transaction through a cursor, and ends that transaction when the reader goes away', async () => {
    const stream = exportAuditLog(ctx.db.app, owner.user.tenant_id);
    const reader = stream[Symbol.asyncIterator]();
    const first = await reader.next();
    const text = String(first.value);
    // One cursor batch at a time, not the whole log.
    const firstLines = text.split('\n').filter((line) => line !== '').length;
    assert.equal(firstLines, EXPORT_BATCH);
    const exporting = async () => {
      const rows = await ctx.db.superuser<{ state: string }[]>`
        select state from pg_stat_activity
        where datname = current_database() and usename = 'enclave_app' and query like '%from audit_events order by seq%'
          and state <> 'idle'`;
      return rows.map((row) => row.state);
    };
    const open = await exporting();
    assert.equal(open.length, 1, 'one transaction holds the cursor while the reader has not read on');
    stream.destroy();
    let ended = false;
    // Each check is one query; PostgreSQL reports the transaction's end, with no sleep in between.
    for (let i = 0; i < 10_000 && !ended; i += 1) ended = (await exporting()).length === 0;
    assert.equal(ended, true, 'the export transaction outlived its reader');
  });
});

describe('tenant isolation', () => {
  test("TEN-4: tenant B's events, head and export hold none of tenant A's events", async () => {
    const events = await allEvents(other);
    assert.ok(events.length > 0);
    assert.ok(events.every((event) => JSON.parse(event.canonical).tenant === other.user.tenant_id));
    assert.deepEqual((await page('/api/v1/audit/events?action=test.padding', other)).events, []);
    const ownerHead = (await get('/api/v1/audit/head', owner)).json<{ seq: number; hash: string }>();
    const otherHead = (await get('/api/v1/audit/head', other)).json<{ seq: number; hash: string }>();
    assert.equal(otherHead.seq, events.length);
    assert.notEqual(otherHead.hash, ownerHead.hash);
    const lines = parseExport((await get('/api/v1/audit/export', other)).body);
    assert.equal(lines.length, events.length);
    assert.ok(lines.every((line) => line.tenant === other.user.tenant_id));
    assert.ok(!lines.some((line) => line.canonical.includes(owner.user.tenant_id)));
  });

  test('AUD-6: a read-only API token can read and export its log', async () => {
    const reader = await createAccount(ctx.db, ctx.testApp, { tokenScope: 'read' });
    assert.equal((await get('/api/v1/audit/events', reader)).statusCode, 200);
    assert.equal((await get('/api/v1/audit/head', reader)).statusCode, 200);
    const lines = parseExport((await get('/api/v1/audit/export', reader)).body);
    assert.equal(verifyChain(lines, { tenant: reader.user.tenant_id }).ok, true);
  });
});
