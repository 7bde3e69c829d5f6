import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import { createAccount, type TestAccount } from '../../test/helpers/accounts.ts';
import { useTestApp } from '../../test/helpers/app.ts';
import { getPage, postForm, textOf } from '../../test/helpers/pages.ts';
import { approvedConnection, type RelayAgent, relayAgent } from '../../test/helpers/relay.ts';
import { withTenant } from '../db/tenant.ts';
import { DEFAULT_PAGE } from '../http/page-cursor.ts';
import { type RelayGrant, resolveRelayToken } from './connections.ts';
import { MAX_MESSAGE_BYTES, postOwnerMessage, startThread } from './threads.ts';

// RLY-4 on the dashboard: the owner reads a thread other tenants opened with
// their agent, sees who wrote each message and its delivery, answers from
// the signed-in session and closes it, with plain POST forms (no
// JavaScript). A payload retention deleted shows as expired (RLY-9); another
// tenant's thread and a colleague's (for a member) are refused (TEN-1).

const ctx = useTestApp();
let owner: TestAccount;
let asker: TestAccount;
let member: TestAccount;
let target: RelayAgent;
let grant: RelayGrant;

ctx.before(async () => {
  owner = await createAccount(ctx.db, ctx.testApp);
  asker = await createAccount(ctx.db, ctx.testApp);
  member = await createAccount(ctx.db, ctx.testApp, { kind: 'member', tenantOf: owner });
  target = await relayAgent(ctx, owner);
  const connection = await approvedConnection(ctx, owner, asker, target);
  const resolved = await resolveRelayToken(ctx.db.app, connection.relayToken);
  assert.ok(resolved);
  grant = resolved;
});

const get = (account: TestAccount, url: string) =>
  getPage(ctx.testApp.app, url, { cookie: account.sessionCookie });
const post = (account: TestAccount, url: string, form: Record<string, string> = {}) =>
  postForm(ctx.testApp.app, url, form, { cookie: account.sessionCookie });

/** A thread the asker started with the owner's agent (as the data plane would); its id. */
async function thread(text = 'Hello <b>owner</b>'): Promise<string> {
  const started = await withTenant(ctx.db.app, grant.targetTenantId, (tx) => startThread(tx, grant, text));
  return started.thread.id;
}

const messages = (threadId: string) =>
  ctx.db.superuser<{ seq: number; author: string; body: string | null }[]>`
    select seq, author, body from relay_messages where thread_id = ${threadId}::uuid order by seq`;

describe('thread pages', () => {
  test('RLY-4: the owner answers from a signed-in session: the thread page shows who wrote each message and its delivery, the reply form posts the owner’s message, and closing asks first', async () => {
    const id = await thread();
    const listing = await get(owner, '/dashboard/threads');
    assert.equal(listing.statusCode, 200);
    assert.match(listing.body, /<a href="\/dashboard\/threads">Threads<\/a>/);
    assert.match(listing.body, new RegExp(`href="/dashboard/threads/${id}"`));
    assert.match(textOf(listing.body), new RegExp(`${target.handle} a person open 1`));
    const filtered = await get(owner, `/dashboard/threads?agent_id=${target.id}`);
    assert.match(filtered.body, new RegExp(`href="/dashboard/threads/${id}"`));
    // The agent page and the approved incoming connection link to the agent's threads.
    for (const from of [`/dashboard/agents/${target.id}`, '/dashboard/connections']) {
      assert.match(
        (await get(owner, from)).body,
        new RegExp(`href="/dashboard/threads\\?agent_id=${target.id}"`),
      );
    }

    const shown = await get(owner, `/dashboard/threads/${id}`);
    assert.equal(shown.statusCode, 200);
    // The caller's text is escaped, labelled with its writer and its delivery state.
    assert.match(shown.body, /<pre>Hello &lt;b&gt;owner&lt;\/b&gt;<\/pre>/);
    assert.match(textOf(shown.body), /a person · \d{4}-\d\d-\d\d \d\d:\d\d UTC · queued/);
    assert.match(shown.body, new RegExp(`<form method="post" action="/dashboard/threads/${id}/messages"`));

    const replied = await post(owner, `/dashboard/threads/${id}/messages`, { text: 'Owner here.\nHello!' });
    assert.equal(replied.statusCode, 303, replied.body);
    assert.equal(replied.headers.location, `/dashboard/threads/${id}?notice=replied`);
    assert.deepEqual(
      (await messages(id)).map((m) => [m.seq, m.author, m.body]),
      [
        [1, 'caller', 'Hello <b>owner</b>'],
        [2, 'owner', 'Owner here.\nHello!'],
      ],
    );
    const after = await get(owner, `/dashboard/threads/${id}?notice=replied`);
    assert.match(after.body, /Your reply was added/);
    assert.match(textOf(after.body), new RegExp(`${owner.user.username} \\(owner\\) · `));

    const confirm = await get(owner, `/dashboard/threads/${id}/close`);
    assert.equal(confirm.statusCode, 200);
    assert.match(confirm.body, new RegExp(`<form method="post" action="/dashboard/threads/${id}/close"`));
    const closed = await post(owner, `/dashboard/threads/${id}/close`);
    assert.equal(closed.statusCode, 303);
    const [state] = await ctx.db.superuser<{ state: string }[]>`
      select state from relay_threads where id = ${id}::uuid`;
    assert.equal(state?.state, 'closed');
    const page = await get(owner, `/dashboard/threads/${id}?notice=closed`);
    assert.match(page.body, /This thread is closed: it takes no more messages/);
    assert.doesNotMatch(page.body, /action="\/dashboard\/threads\/[^"]+\/messages"/);
  });

  test('RLY-4: a reply to a closed thread, an empty one and one over the limit get the page back with the reason, and nothing is written', async () => {
    const id = await thread('ping');
    const empty = await post(owner, `/dashboard/threads/${id}/messages`, { text: '' });
    assert.equal(empty.statusCode, 400);
    assert.match(empty.body, /id="f-text-error"/);
    const blank = await post(owner, `/dashboard/threads/${id}/messages`, { text: '   \n ' });
    assert.equal(blank.statusCode, 400);
    assert.match(blank.body, /Reply must not be empty/);
    const missing = await post(owner, `/dashboard/threads/${id}/messages`, {});
    assert.equal(missing.statusCode, 400);
    assert.match(missing.body, /Reply is required/);
    const large = await post(owner, `/dashboard/threads/${id}/messages`, {
      text: 'x'.repeat(MAX_MESSAGE_BYTES + 1),
    });
    assert.equal(large.statusCode, 413);
    assert.match(large.body, /<p class="error" id="f-text-error">Reply must be at most 32768 bytes of UTF-8/);
    // Past the server's body limit the form never reaches the page: a browser gets the 413 as a page.
    const huge = await ctx.testApp.app.inject({
      method: 'POST',
      url: `/dashboard/threads/${id}/messages`,
      headers: {
        cookie: owner.sessionCookie,
        origin: new URL(ctx.testApp.config.publicUrl).origin,
        accept: 'text/html',
        'content-type': 'application/x-www-form-urlencoded',
      },
      payload: new URLSearchParams({ text: 'x'.repeat(1024 * 1024) }).toString(),
    });
    assert.equal(huge.statusCode, 413);
    assert.match(String(huge.headers['content-type']), /^text\/html/);
    assert.equal((await messages(id)).length, 1);

    assert.equal((await post(owner, `/dashboard/threads/${id}/close`)).statusCode, 303);
    const late = await post(owner, `/dashboard/threads/${id}/messages`, { text: 'too late' });
    assert.equal(late.statusCode, 409);
    assert.match(late.body, /the thread is closed: it takes no more messages/);
    assert.equal((await messages(id)).length, 1);
    const closeAgain = await get(owner, `/dashboard/threads/${id}/close`);
    assert.equal(closeAgain.statusCode, 409);
    assert.match(closeAgain.body, /The thread is closed already/);
  });

  test('RLY-9: a message whose payload retention deleted shows as expired, never as an empty message', async () => {
    const id = await thread('kept for 30 days');
    await ctx.db.superuser`
      update relay_messages set body = null, payload_deleted_at = now() where thread_id = ${id}::uuid`;
    const shown = await get(owner, `/dashboard/threads/${id}`);
    assert.equal(shown.statusCode, 200);
    assert.match(shown.body, /<p class="muted expired">expired \(deleted after 30 days\)<\/p>/);
    assert.doesNotMatch(shown.body, /<pre><\/pre>/);
    assert.doesNotMatch(shown.body, /kept for 30 days/);
  });

  test('RLY-4: a thread’s messages page by seq and one agent’s threads page with its filter kept in the links; a cursor of another list is refused', async () => {
    const id = await thread('first');
    await withTenant(ctx.db.app, grant.targetTenantId, async (tx) => {
      for (let n = 2; n <= DEFAULT_PAGE + 1; n += 1)
        await postOwnerMessage(tx, id, owner.user.id, `reply ${n}`);
    });
    const first = await get(owner, `/dashboard/threads/${id}`);
    assert.equal((first.body.match(/<li class="message"/g) ?? []).length, DEFAULT_PAGE);
    assert.match(
      first.body,
      new RegExp(`<a href="/dashboard/threads/${id}\\?after=${DEFAULT_PAGE}" rel="next">`),
    );
    const second = await get(owner, `/dashboard/threads/${id}?after=${DEFAULT_PAGE}`);
    assert.deepEqual(
      [...second.body.matchAll(/id="m-(\d+)"/g)].map((m) => m[1]),
      [String(DEFAULT_PAGE + 1)],
    );
    assert.match(second.body, new RegExp(`<a href="/dashboard/threads/${id}">First page</a>`));

    // A second agent with more than a page of threads.
    const other = await relayAgent(ctx, owner);
    const otherConnection = await approvedConnection(ctx, owner, asker, other);
    const otherGrant = await resolveRelayToken(ctx.db.app, otherConnection.relayToken);
    assert.ok(otherGrant);
    await withTenant(ctx.db.app, otherGrant.targetTenantId, async (tx) => {
      for (let n = 0; n <= DEFAULT_PAGE; n += 1) await startThread(tx, otherGrant, `thread ${n}`);
    });
    const filtered = await get(owner, `/dashboard/threads?agent_id=${other.id}`);
    assert.equal((filtered.body.match(/aria-label="Open the thread/g) ?? []).length, DEFAULT_PAGE);
    const next = /<a href="([^"]+)" rel="next">/.exec(filtered.body)?.[1]?.replaceAll('&amp;', '&');
    assert.ok(next !== undefined);
    const nextUrl = new URL(next, 'http://x');
    assert.equal(nextUrl.searchParams.get('agent_id'), other.id);
    const last = await get(owner, next);
    assert.equal((last.body.match(/aria-label="Open the thread/g) ?? []).length, 1);
    assert.match(last.body, new RegExp(`<a href="/dashboard/threads\\?agent_id=${other.id}">First page</a>`));
    // The filtered list's cursor is not one of the whole list's.
    const foreign = await get(
      owner,
      `/dashboard/threads?after=${encodeURIComponent(nextUrl.searchParams.get('after') ?? '')}`,
    );
    assert.equal(foreign.statusCode, 400);
    assert.match(foreign.body, /No such page/);
  });

  test('TEN-1: another tenant’s thread, an unknown id and a malformed one are the same 404 on every thread page; a member on a colleague’s agent is not allowed', async () => {
    const id = await thread('private');
    const unknown = randomUUID();
    for (const [account, threadId] of [
      [asker, id],
      [owner, unknown],
      [owner, 'not-a-uuid'],
    ] as const) {
      for (const [method, path] of [
        ['GET', ''],
        ['GET', '/close'],
        ['POST', '/close'],
        ['POST', '/messages'],
      ] as const) {
        const url = `/dashboard/threads/${threadId}${path}`;
        const response =
          method === 'GET' ? await get(account, url) : await post(account, url, { text: 'probe' });
        assert.equal(response.statusCode, 404, `${method} ${url}`);
        assert.match(response.body, /There is no such thread/);
        assert.doesNotMatch(response.body, /private/);
      }
    }
    // The asker's tenant lists none of the owner's threads, and cannot filter by the owner's agent.
    assert.doesNotMatch((await get(asker, '/dashboard/threads')).body, new RegExp(id));
    assert.equal((await get(asker, `/dashboard/threads?agent_id=${target.id}`)).statusCode, 404);
    assert.equal((await get(owner, '/dashboard/threads?agent_id=nope')).statusCode, 404);
    assert.equal((await get(owner, '/dashboard/threads?after=forged')).statusCode, 400);
    assert.equal((await get(owner, `/dashboard/threads/${id}?after=-1`)).statusCode, 400);

    const colleague = await get(member, `/dashboard/threads/${id}`);
    assert.equal(colleague.statusCode, 403);
    assert.match(colleague.body, /Not allowed/);
    assert.equal((await post(member, `/dashboard/threads/${id}/messages`, { text: 'hi' })).statusCode, 403);
    assert.equal((await post(member, `/dashboard/threads/${id}/close`)).statusCode, 403);
    assert.equal((await messages(id)).length, 1);
  });
});
