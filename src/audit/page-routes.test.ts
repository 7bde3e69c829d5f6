import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { createAccount, type TestAccount } from '../../test/helpers/accounts.ts';
import { insertAgent } from '../../test/helpers/agents.ts';
import { useTestApp } from '../../test/helpers/app.ts';
import { insertChain, tempAuditSetup } from '../../test/helpers/audit.ts';
import { getPage, textOf } from '../../test/helpers/pages.ts';
import { SERVICE_QUERY_ACTION, withTenant } from '../db/tenant.ts';
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
    assert.match(body, /<a href="\/api\/v1\/audit\/bundle" download>Download the whole log<\/a>/);
    assert.doesNotMatch(body, /\/api\/v1\/audit\/export/, 'one export: the bundle enclave-verify checks');
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

describe('/dashboard/audit: names, details and service queries', () => {
  let reader: TestAccount;
  let agentId = '';
  /** The reader's events that are not service queries, newest first. */
  let plain: number[] = [];
  let serviceQueries: number[] = [];

  ctx.before(async () => {
    reader = await createAccount(ctx.db, ctx.testApp);
    const tenant = reader.user.tenant_id;
    agentId = await insertAgent(ctx.db.app, tenant, 'audit-names');
    await withTenant(ctx.db.app, tenant, async (tx) => {
      const named = await appendAuditEvent(tx, tenant, {
        actor: `user:${reader.user.id}`,
        action: 'test.named',
        target: `agent:${agentId}`,
        data: { reason: 'a reason <b>', count: 3, nested: { a: [1, 2] } },
      });
      const foreign = await appendAuditEvent(tx, tenant, {
        actor: `user:${other.user.id}`,
        action: 'test.foreign',
        target: `agent:${randomUUID()}`,
        data: {},
      });
      plain.push(named.seq, foreign.seq);
      // 60 service queries among 60 more events: more than a page of each.
      for (let n = 0; n < 120; n += 1) {
        const service = n % 2 === 0;
        const { seq } = await appendAuditEvent(tx, tenant, {
          actor: 'system',
          action: service ? SERVICE_QUERY_ACTION : 'test.padding',
          target: null,
          data: service ? { reason: 'a test read' } : { n },
        });
        (service ? serviceQueries : plain).push(seq);
      }
    });
    const all = (
      await ctx.db.superuser<{ seq: string; action: string }[]>`
        select seq, action from audit_events where tenant_id = ${tenant}::uuid order by seq desc`
    ).map((row) => ({ seq: Number(row.seq), action: row.action }));
    plain = all.filter((event) => event.action !== SERVICE_QUERY_ACTION).map((event) => event.seq);
    serviceQueries = all.filter((event) => event.action === SERVICE_QUERY_ACTION).map((event) => event.seq);
  });

  /** Every page from the first, following Older links: each page's seqs. */
  async function walk(url: string): Promise<number[][]> {
    const pages: number[][] = [];
    let next: string | undefined = url;
    while (next !== undefined) {
      const shown = await auditPage(next, reader);
      assert.equal(shown.status, 200, next);
      pages.push(seqs(shown.body));
      next = link(shown.body, 'next');
    }
    return pages;
  }

  test('AUD-6: users and agents appear by name, looked up in the reader’s tenant only; details are a definition list', async () => {
    const { body } = await auditPage('/dashboard/audit?action=test.named', reader);
    assert.match(
      body,
      new RegExp(
        `<span class="ref" title="user:${reader.user.id}">user <strong>${reader.user.username}</strong></span>`,
      ),
    );
    assert.match(
      body,
      new RegExp(`<span class="ref" title="agent:${agentId}">agent <strong>audit-names test</strong></span>`),
    );
    assert.match(
      body,
      /<dl class="details"><dt>count<\/dt><dd>3<\/dd><dt>nested<\/dt><dd><code>\{&quot;a&quot;:\[1,2\]\}<\/code><\/dd><dt>reason<\/dt><dd>a reason &lt;b&gt;<\/dd><\/dl>/,
    );
    // Another tenant's user and an agent that does not exist are shown as recorded, never by name.
    const foreign = await auditPage('/dashboard/audit?action=test.foreign', reader);
    assert.match(foreign.body, new RegExp(`<code>user:${other.user.id}</code>`));
    assert.doesNotMatch(foreign.body, new RegExp(other.user.username));
    assert.match(foreign.body, /<code>agent:[0-9a-f-]{36}<\/code>/);
  });

  test('AUD-6: service queries are folded by default behind a link; pages stay full and walk the whole log', async () => {
    const first = await auditPage('/dashboard/audit', reader);
    assert.match(
      textOf(first.body),
      /Service queries \( system\.service_query : .*\) are folded\. \d+ of them are among the events on this page\. Show service queries/,
    );
    assert.doesNotMatch(first.body, /<td><code>system\.service_query<\/code><\/td>/);
    const folded = await walk('/dashboard/audit');
    for (const shown of folded.slice(0, -1))
      assert.equal(shown.length, AUDIT_PAGE_SIZE, 'no page short of a full one but the last');
    assert.ok((folded.at(-1)?.length ?? 0) > 0, 'no empty last page');
    assert.deepEqual(folded.flat(), plain);

    const toggle = /<a href="([^"]+)">Show service queries<\/a>/
      .exec(first.body)?.[1]
      ?.replaceAll('&amp;', '&');
    assert.equal(toggle, '/dashboard/audit?service_queries=shown');
    const shownPage = await auditPage(toggle, reader);
    assert.match(shownPage.body, /<td><code>system\.service_query<\/code><\/td>/);
    assert.match(shownPage.body, /<a href="\/dashboard\/audit">Fold them<\/a>/);
    assert.match(
      link(shownPage.body, 'next') ?? '',
      /^\/dashboard\/audit\?before=\d+&service_queries=shown$/,
    );
    const everything = await walk(toggle);
    assert.deepEqual(
      everything.flat(),
      [...plain, ...serviceQueries].sort((a, b) => b - a),
    );

    // Choosing the action in the filter shows them too, without the toggle.
    const chosen = await auditPage(`/dashboard/audit?action=${SERVICE_QUERY_ACTION}`, reader);
    assert.deepEqual(seqs(chosen.body), serviceQueries.slice(0, AUDIT_PAGE_SIZE));
    assert.doesNotMatch(chosen.body, /Show service queries|Fold them/);
    // Newer from an older folded page comes back without them.
    const older = link(first.body, 'next') ?? '';
    const back = link((await auditPage(older, reader)).body, 'prev') ?? '';
    assert.deepEqual(seqs((await auditPage(back, reader)).body), plain.slice(0, AUDIT_PAGE_SIZE));
  });

  test('AUD-6: an unknown fold value is a 400 page', async () => {
    const response = await auditPage('/dashboard/audit?service_queries=yes', reader);
    assert.equal(response.status, 400);
    assert.match(response.body, /That page of the audit log does not exist\./);
  });

  test('AUD-6: on a long log the action list and a filter that matches nothing read audit_events through its action index, never a Seq Scan', async () => {
    const big = await createAccount(ctx.db, ctx.testApp);
    const tenant = big.user.tenant_id;
    const times = (count: number) => Array.from({ length: count }, () => new Date());
    await insertChain(ctx.db, tenant, times(6000), 'test.bulk');
    await insertChain(ctx.db, tenant, times(5), 'test.rare');
    await insertChain(ctx.db, tenant, times(2000), 'test.bulk');
    await ctx.db.superuser`analyze audit_events`;
    const present = await ctx.db.superuser<{ action: string }[]>`
      select distinct action from audit_events where tenant_id = ${tenant}::uuid order by action`;
    // The page's filter offers exactly the actions present, read by the skip scan (src/audit/log.ts).
    const { body } = await auditPage('/dashboard/audit', big);
    const options = [...body.matchAll(/<option value="([^"]*)"/g)].map((match) => match[1]);
    assert.deepEqual(options, ['', ...present.map((row) => row.action)]);
    const nothing = await auditPage('/dashboard/audit?action=no.such_action', big);
    assert.equal(nothing.status, 200);
    assert.deepEqual(seqs(nothing.body), []);
    // The plans of the page's two reads that grew with the log (src/audit/log.ts, same SQL).
    const plans = await withTenant(ctx.db.app, tenant, async (tx) => ({
      actions: await tx.unsafe(`explain
        with recursive actions (action) as (
          (select action from audit_events order by action limit 1)
          union all
          select (select e.action from audit_events e where e.action > a.action order by e.action limit 1)
          from actions a where a.action is not null
        )
        select action from actions where action is not null`),
      nothing: await tx.unsafe(
        `explain select seq from audit_events where true and action = 'no.such_action'::text order by seq desc limit 50`,
      ),
    }));
    for (const [read, rows] of Object.entries(plans)) {
      const plan = rows.map((row) => String(row['QUERY PLAN'])).join('\n');
      assert.doesNotMatch(plan, /Seq Scan/, `${read}:\n${plan}`);
      assert.match(plan, /audit_events_action/, `${read}:\n${plan}`);
    }
  });
});
