import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { createAccount, type TestAccount } from '../../test/helpers/accounts.ts';
import { useTestApp } from '../../test/helpers/app.ts';
import { tempAuditSetup } from '../../test/helpers/audit.ts';
import { getPage, textOf } from '../../test/helpers/pages.ts';
import { withTenant } from '../db/tenant.ts';
import { createLogger } from '../logger.ts';
import { AUDIT_PAGE_SIZE } from '../web/audit-page.ts';
import { appendAuditEvent } from './append.ts';
import { createCheckpointService } from './checkpoint-log.ts';

// AUD-6 in the browser: /dashboard/audit shows the signed-in tenant's log,
// newest first, a page at a time by seq, filtered by action, with the chain
// head; it is linked from the dashboard and the navigation; another tenant's
// events never appear (TEN-4); and it needs no inline script or style (OPS-3).

const ctx = useTestApp();
let owner: TestAccount;
let other: TestAccount;
/** The owner's head seq once set-up is done. */
let headSeq = 0;

ctx.before(async () => {
  [owner, other] = [await createAccount(ctx.db, ctx.testApp), await createAccount(ctx.db, ctx.testApp)];
  const tenant = owner.user.tenant_id;
  headSeq = await withTenant(ctx.db.app, tenant, async (tx) => {
    let seq = 0;
    for (let n = 0; n < AUDIT_PAGE_SIZE * 2; n += 1) {
      ({ seq } = await appendAuditEvent(tx, tenant, {
        actor: 'system',
        action: n % 7 === 0 ? 'test.seventh' : 'test.padding',
        target: `thing:${n}`,
        data: { n },
      }));
    }
    return seq;
  });
});

/** The seq column of the page's table, in order. */
function seqs(body: string): number[] {
  return [...body.matchAll(/<tr><td>(\d+)<\/td>/g)].map((match) => Number(match[1]));
}

function link(body: string, rel: 'prev' | 'next'): string | undefined {
  const match = new RegExp(`<a href="([^"]+)" rel="${rel}">`).exec(body);
  return match?.[1]?.replaceAll('&amp;', '&');
}

async function auditPage(url: string, account: TestAccount = owner) {
  const response = await getPage(ctx.testApp.app, url, { cookie: account.sessionCookie });
  return { status: response.statusCode, body: response.body };
}

describe('/dashboard/audit', () => {
  test("AUD-6: the page shows the tenant's newest events first with the chain head, and is linked from the dashboard and the navigation", async () => {
    const { status, body } = await auditPage('/dashboard/audit');
    assert.equal(status, 200, body);
    assert.deepEqual(
      seqs(body),
      Array.from({ length: AUDIT_PAGE_SIZE }, (_, i) => headSeq - i),
    );
    const head = (
      await ctx.testApp.app.inject({
        method: 'GET',
        url: '/api/v1/audit/head',
        headers: { cookie: owner.sessionCookie },
      })
    ).json<{ seq: number; hash: string }>();
    assert.equal(head.seq, headSeq);
    assert.match(
      textOf(body),
      new RegExp(`Chain status: head seq ${headSeq} ?, hash ${head.hash.slice(0, 16)}…`),
    );
    assert.match(body, /<a href="\/api\/v1\/audit\/export" download>/);
    assert.match(body, /<nav>.*<a href="\/dashboard\/audit">Audit<\/a>/s);
    const dashboard = await auditPage('/dashboard');
    assert.match(dashboard.body, /<a href="\/dashboard\/audit">Audit log<\/a>/);
    assert.doesNotMatch(dashboard.body, /Audit log<\/strong> <span class="muted">— coming soon/);
  });

  test('AUD-6: Older and Newer links page by seq through the whole log and back', async () => {
    const first = await auditPage('/dashboard/audit');
    assert.equal(link(first.body, 'prev'), undefined, 'no newer page at the head');
    const olderUrl = link(first.body, 'next');
    assert.equal(olderUrl, `/dashboard/audit?before=${headSeq - AUDIT_PAGE_SIZE + 1}`);
    const seen = seqs(first.body);
    let url: string | undefined = olderUrl;
    while (url !== undefined) {
      const next = await auditPage(url);
      assert.equal(next.status, 200);
      seen.push(...seqs(next.body));
      url = link(next.body, 'next');
    }
    assert.deepEqual(
      seen,
      Array.from({ length: headSeq }, (_, i) => headSeq - i),
    );
    // From the oldest page, Newer walks back up; the page after seq 1 starts at 2.
    const oldest = await auditPage('/dashboard/audit?after=0');
    assert.deepEqual(
      seqs(oldest.body),
      Array.from({ length: AUDIT_PAGE_SIZE }, (_, i) => AUDIT_PAGE_SIZE - i),
    );
    assert.equal(link(oldest.body, 'next'), undefined, 'nothing older than seq 1');
    const newer = link(oldest.body, 'prev');
    assert.equal(newer, `/dashboard/audit?after=${AUDIT_PAGE_SIZE}`);
    assert.equal(seqs((await auditPage(newer ?? '')).body).at(-1), AUDIT_PAGE_SIZE + 1);
  });

  test('AUD-6: the action filter lists the actions present and shows only the chosen one, keeping it across pages', async () => {
    const { body } = await auditPage('/dashboard/audit');
    const options = [...body.matchAll(/<option value="([^"]*)"/g)].map((match) => match[1]);
    assert.deepEqual(options, [
      '',
      'account.created',
      'tenant.created',
      'test.padding',
      'test.seventh',
      'token.minted',
    ]);
    const filtered = await auditPage('/dashboard/audit?action=test.seventh');
    assert.equal(filtered.status, 200);
    const shown = seqs(filtered.body);
    assert.equal(shown.length, Math.ceil((AUDIT_PAGE_SIZE * 2) / 7));
    assert.equal(filtered.body.split('<code>test.seventh</code>').length - 1, shown.length);
    assert.doesNotMatch(
      filtered.body,
      /<code>(test\.padding|tenant\.created|account\.created|token\.minted)<\/code>/,
    );
    assert.match(filtered.body, /<option value="test\.seventh" selected>/);
    const all = await auditPage('/dashboard/audit?action=');
    assert.equal(seqs(all.body).length, AUDIT_PAGE_SIZE);
    // Paging links keep the filter.
    const padding = await auditPage('/dashboard/audit?action=test.padding');
    assert.match(link(padding.body, 'next') ?? '', /^\/dashboard\/audit\?before=\d+&action=test\.padding$/);
  });

  test('AUD-6: a malformed page query is a 400 page, not an error', async () => {
    for (const query of [
      'after=-1',
      'before=0',
      'after=x',
      'after=1&before=5',
      'action=DROP%20TABLE',
      'foo=1',
    ]) {
      const response = await auditPage(`/dashboard/audit?${query}`);
      assert.equal(response.status, 400, query);
      assert.match(response.body, /That page of the audit log does not exist\./);
    }
  });

  test("TEN-4: tenant B's audit page shows none of tenant A's events or actions", async () => {
    const { status, body } = await auditPage('/dashboard/audit', other);
    assert.equal(status, 200);
    assert.ok(seqs(body).length > 0);
    assert.doesNotMatch(body, /test\.padding|test\.seventh|thing:/);
    const filtered = await auditPage('/dashboard/audit?action=test.padding', other);
    assert.deepEqual(seqs(filtered.body), []);
  });

  test('OPS-3: the audit page uses no inline script or style, and an anonymous visitor is sent to sign in', async () => {
    const { body } = await auditPage('/dashboard/audit');
    assert.doesNotMatch(body, /<script|<style|\sstyle=|\son[a-z]+=/i);
    const anonymous = await getPage(ctx.testApp.app, '/dashboard/audit');
    assert.equal(anonymous.statusCode, 303);
    assert.equal(anonymous.headers.location, '/login?next=%2Fdashboard%2Faudit');
  });
});

describe('/dashboard/audit and checkpoints', () => {
  test('AUD-4: the page says how far the latest signed checkpoint commits the chain, and links the recovery bundle', async () => {
    const before = await auditPage('/dashboard/audit');
    assert.match(before.body, /No signed checkpoint covers this chain yet/);
    assert.match(before.body, /href="\/api\/v1\/audit\/bundle"/);

    const { setup, dir } = await tempAuditSetup();
    try {
      const checkpoints = createCheckpointService({
        sql: ctx.db.app,
        signing: setup.signing,
        publisher: setup.publisher,
        logger: createLogger('silent'),
      });
      await checkpoints.makeCheckpoint();
      const committed = await auditPage('/dashboard/audit');
      assert.match(committed.body, /The latest signed checkpoint \(tree size \d+\) commits to this head\./);

      const tenant = owner.user.tenant_id;
      await withTenant(ctx.db.app, tenant, (tx) =>
        appendAuditEvent(tx, tenant, {
          actor: 'system',
          action: 'test.after_checkpoint',
          target: null,
          data: {},
        }),
      );
      const behind = await auditPage('/dashboard/audit');
      assert.match(
        behind.body,
        new RegExp(`commits to seq ${headSeq};\\s+the 1 newer events will be in the next one`),
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
