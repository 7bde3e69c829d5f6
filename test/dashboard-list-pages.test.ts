import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { LightMyRequestResponse } from 'fastify';
import { DEFAULT_PAGE, MAX_PAGE } from '../src/http/page-cursor.ts';
import { createAccount, type TestAccount } from './helpers/accounts.ts';
import { useTestApp } from './helpers/app.ts';
import { getPage, postForm } from './helpers/pages.ts';

// The dashboard's lists page like the JSON API's: DEFAULT_PAGE rows, then a
// Next page link with the API's own cursor. Every row is reachable, and the
// confirmation pages find a row by its id wherever it is in the list. Rows
// are seeded with SQL in one statement each (one created_at, so ties on it
// are broken by id, as the cursor must).

const ctx = useTestApp();
// Past MAX_PAGE: the dashboard once showed the first MAX_PAGE rows only, and could not revoke a later one.
const SEEDED = MAX_PAGE + 30;
const UUID = '([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})';

let alice: TestAccount;
let bob: TestAccount;

/** The dashboard lists, each with the ids its rows link to and its API twin. */
const lists = [
  {
    path: '/dashboard/settings/tokens',
    row: `/dashboard/settings/tokens/${UUID}/revoke`,
    api: '/api/v1/tokens',
  },
  { path: '/profile', row: `/profile/sessions/${UUID}/revoke`, api: '/api/v1/sessions' },
  { path: '/dashboard/members', row: `/dashboard/members/${UUID}/remove`, api: '/api/v1/members' },
  { path: '/dashboard/agents', row: `href="/dashboard/agents/${UUID}"`, api: '/api/v1/agents' },
  {
    path: '/dashboard/settings/invites',
    row: `/dashboard/settings/invites/${UUID}/revoke`,
    api: '/api/v1/invites',
  },
] as const;

function rowIds(body: string, row: string): string[] {
  return [...body.matchAll(new RegExp(row, 'g'))].map((match) => match[1] ?? '');
}

function nextLink(body: string): string | undefined {
  return /<a href="([^"]+)" rel="next">Next page<\/a>/.exec(body)?.[1];
}

function apiGet(url: string, account: TestAccount): Promise<LightMyRequestResponse> {
  return ctx.testApp.app.inject({
    method: 'GET',
    url,
    headers: { authorization: `Bearer ${account.apiToken}` },
  });
}

/** Every page of a dashboard list, by its Next page links. */
async function walk(
  path: string,
  row: string,
  account: TestAccount,
): Promise<{ ids: string[]; pages: string[] }> {
  const ids: string[] = [];
  const pages: string[] = [];
  let url: string | undefined = path;
  while (url !== undefined) {
    const response = await getPage(ctx.testApp.app, url, { cookie: account.sessionCookie });
    assert.equal(response.statusCode, 200, `${url}: ${response.body.slice(0, 300)}`);
    const found = rowIds(response.body, row);
    assert.ok(found.length <= DEFAULT_PAGE, `${url} shows at most a page (${found.length})`);
    ids.push(...found);
    pages.push(response.body);
    url = nextLink(response.body);
    assert.ok(pages.length < 20, 'the walk ends');
  }
  return { ids, pages };
}

/** What the API lists, every page of it: the ids the dashboard must show, in the same order. */
async function apiIds(url: string, account: TestAccount): Promise<string[]> {
  const ids: string[] = [];
  let after: string | null = null;
  do {
    const query: string = after === null ? '?limit=500' : `?limit=500&after=${encodeURIComponent(after)}`;
    const body = (await apiGet(`${url}${query}`, account)).json<Record<string, unknown>>();
    const [rows] = Object.values(body).filter(Array.isArray) as { id: string }[][];
    ids.push(...(rows ?? []).map((listed) => listed.id));
    after = body.next_after as string | null;
  } while (after !== null);
  return ids;
}

/** `count` rows of each list for `account`, in one statement per table. */
async function seed(account: TestAccount, count: number): Promise<void> {
  const tenant = account.user.tenant_id;
  const user = account.user.id;
  const sql = ctx.db.superuser;
  const hash = (kind: string) => sql`encode(sha256((${kind} || n || gen_random_uuid())::text::bytea), 'hex')`;
  await sql`
    insert into api_tokens (tenant_id, user_id, name, token_hash, last4, scope)
    select ${tenant}::uuid, ${user}::uuid, 'seeded ' || n, ${hash('token')}, 'abcd', 'read'
    from generate_series(1, ${count}::int4) n`;
  await sql`
    insert into sessions (tenant_id, user_id, token_hash, expires_at, user_agent)
    select ${tenant}::uuid, ${user}::uuid, ${hash('session')}, now() + interval '1 day', 'seeded ' || n
    from generate_series(1, ${count}::int4) n`;
  await sql`
    insert into users (tenant_id, username, email, password_hash, role)
    select ${tenant}::uuid, ${account.user.username} || '-' || n, ${account.user.username} || '-' || n || '@example.test',
           password_hash, 'member'
    from users, generate_series(1, ${count}::int4) n where users.id = ${user}::uuid`;
  await sql`
    insert into agents (tenant_id, handle, name, template_id)
    select ${tenant}::uuid, replace(${account.user.username}, '_', '-') || '-' || n, 'seeded ' || n, 'echo' from generate_series(1, ${count}::int4) n`;
  await sql`
    insert into invites (kind, tenant_id, email, token_hash, expires_at)
    select 'member', ${tenant}::uuid, ${account.user.username} || '-invited-' || n || '@example.test', ${hash('invite')},
           now() + interval '7 days'
    from generate_series(1, ${count}::int4) n`;
}

ctx.before(async () => {
  alice = await createAccount(ctx.db, ctx.testApp);
  bob = await createAccount(ctx.db, ctx.testApp);
  await seed(alice, SEEDED);
  await seed(bob, 3);
});

describe('dashboard lists, a page at a time', () => {
  for (const [control, list] of [
    ['ACC-10', lists[0]],
    ['ACC-3', lists[1]],
    ['ACC-12', lists[2]],
    ['AGT-1', lists[3]],
    ['ACC-1', lists[4]],
  ] as const) {
    test(`${control}: ${list.path} shows a page of rows and a Next page link; following the links shows every row exactly once, in the API's order`, async () => {
      const { ids, pages } = await walk(list.path, list.row, alice);
      assert.ok(pages.length > MAX_PAGE / DEFAULT_PAGE, `${list.path} has ${pages.length} pages`);
      assert.equal(new Set(ids).size, ids.length, 'no row twice');
      assert.deepEqual(ids, await apiIds(list.api, alice), 'every row, in the order of the API');
      const [first = '', second = ''] = pages;
      assert.match(first, /<nav class="pager" aria-label="Pages of [a-zA-Z ]+">/);
      assert.ok(!first.includes('>First page<'), 'the first page links to no first page');
      assert.ok(second.includes(`<a href="${list.path}">First page</a>`), 'a later page links to the first');
      assert.equal(nextLink(pages.at(-1) ?? ''), undefined, 'the last page has no Next link');
      for (const body of pages) assert.doesNotMatch(body, /<script>|style="/, 'no inline script or style');
    });
  }

  test('ACC-10: a token past the first page is revoked from the dashboard: its confirmation page, then the revoke', async () => {
    const { pages } = await walk(lists[0].path, lists[0].row, alice);
    // A seeded token on the last page (not the one the API calls here use).
    const oldest = rowIds(pages.at(-1) ?? '', lists[0].row).find((id) => id !== alice.apiTokenId);
    assert.ok(oldest !== undefined && !rowIds(pages[0] ?? '', lists[0].row).includes(oldest));
    const confirm = await getPage(ctx.testApp.app, `/dashboard/settings/tokens/${oldest}/revoke`, {
      cookie: alice.sessionCookie,
    });
    assert.equal(confirm.statusCode, 200, confirm.body.slice(0, 300));
    assert.match(confirm.body, /Revoke the token “seeded \d+”\?/);
    const revoked = await postForm(
      ctx.testApp.app,
      `/dashboard/settings/tokens/${oldest}/revoke`,
      {},
      {
        cookie: alice.sessionCookie,
      },
    );
    assert.equal(revoked.statusCode, 303);
    assert.equal(revoked.headers.location, '/dashboard/settings/tokens?notice=token-revoked');
    const [row] = await ctx.db.superuser<{ revoked: boolean }[]>`
      select revoked_at is not null as revoked from api_tokens where id = ${oldest}::uuid`;
    assert.equal(row?.revoked, true);
    const again = await getPage(ctx.testApp.app, `/dashboard/settings/tokens/${oldest}/revoke`, {
      cookie: alice.sessionCookie,
    });
    assert.equal(again.statusCode, 404, 'a revoked token has no confirmation page');
  });

  test('ACC-3: a session past the first page is signed out from /profile: its confirmation page, then the revoke', async () => {
    const { pages } = await walk(lists[1].path, lists[1].row, alice);
    // A seeded session on the last page (not the one signed in here).
    const oldest = rowIds(pages.at(-1) ?? '', lists[1].row).find((id) => id !== alice.sessionId);
    assert.ok(oldest !== undefined && !rowIds(pages[0] ?? '', lists[1].row).includes(oldest));
    const confirm = await getPage(ctx.testApp.app, `/profile/sessions/${oldest}/revoke`, {
      cookie: alice.sessionCookie,
    });
    assert.equal(confirm.statusCode, 200, confirm.body.slice(0, 300));
    assert.match(confirm.body, /Sign out that session\?/);
    const revoked = await postForm(
      ctx.testApp.app,
      `/profile/sessions/${oldest}/revoke`,
      {},
      {
        cookie: alice.sessionCookie,
      },
    );
    assert.equal(revoked.headers.location, '/profile?notice=session-revoked');
    const [row] = await ctx.db.superuser<{ revoked: boolean }[]>`
      select revoked_at is not null as revoked from sessions where id = ${oldest}::uuid`;
    assert.equal(row?.revoked, true);
  });

  test("ACC-10, ACC-3: the confirmation pages find only the user's own live rows by id: another user's token or session is a 404 page", async () => {
    for (const url of [
      `/dashboard/settings/tokens/${bob.apiTokenId}/revoke`,
      `/profile/sessions/${bob.sessionId}/revoke`,
    ]) {
      const response = await getPage(ctx.testApp.app, url, { cookie: alice.sessionCookie });
      assert.equal(response.statusCode, 404, url);
      assert.match(response.body, /<h1>Not found<\/h1>/);
    }
  });

  test("TEN-7: a dashboard page takes the API's cursor of the same list, and the API the page's", async () => {
    for (const list of lists) {
      const api = (await apiGet(`${list.api}?limit=${DEFAULT_PAGE}`, alice)).json<{ next_after: string }>();
      const fromApi = await getPage(
        ctx.testApp.app,
        `${list.path}?after=${encodeURIComponent(api.next_after)}`,
        {
          cookie: alice.sessionCookie,
        },
      );
      assert.equal(fromApi.statusCode, 200, list.path);
      const first = await getPage(ctx.testApp.app, list.path, { cookie: alice.sessionCookie });
      assert.deepEqual(
        rowIds(fromApi.body, list.row),
        rowIds(
          (await getPage(ctx.testApp.app, nextLink(first.body) ?? '', { cookie: alice.sessionCookie })).body,
          list.row,
        ),
        `${list.path}: the API's cursor opens the same second page`,
      );
      const after = new URLSearchParams((nextLink(first.body) ?? '').split('?')[1]).get('after') ?? '';
      const fromPage = await apiGet(
        `${list.api}?limit=${DEFAULT_PAGE}&after=${encodeURIComponent(after)}`,
        alice,
      );
      assert.equal(fromPage.statusCode, 200, list.api);
    }
  });

  test("TEN-7: an altered cursor, another list's, or another tenant's on a dashboard page is a 400 page that says so and shows none of the list", async () => {
    const cursor = async (url: string, account: TestAccount) =>
      (await apiGet(`${url}?limit=1`, account)).json<{ next_after: string }>().next_after;
    const agentsCursor = await cursor('/api/v1/agents', alice);
    const tokensCursor = await cursor('/api/v1/tokens', alice);
    for (const list of lists) {
      const [payload = '', tag = ''] = (await cursor(list.api, alice)).split('.');
      const probes = [
        { after: `${payload}.${tag.slice(1)}A`, why: 'altered' },
        { after: payload, why: 'no MAC' },
        { after: '', why: 'empty' },
        { after: list.api === '/api/v1/agents' ? tokensCursor : agentsCursor, why: "another list's" },
        { after: await cursor(list.api, bob), why: "another tenant's (and user's)" },
      ];
      for (const probe of probes) {
        const response = await getPage(
          ctx.testApp.app,
          `${list.path}?after=${encodeURIComponent(probe.after)}`,
          {
            cookie: alice.sessionCookie,
          },
        );
        assert.equal(response.statusCode, 400, `${list.path}, ${probe.why}`);
        assert.match(String(response.headers['content-type']), /^text\/html/);
        assert.match(response.body, /<h1>No such page<\/h1>/);
        assert.ok(response.body.includes(`<a href="${list.path}">Go to the first page</a>`));
        assert.deepEqual(rowIds(response.body, list.row), [], `${list.path}, ${probe.why}: no rows`);
        assert.ok(!response.body.includes('seeded'), `${list.path}, ${probe.why}: nothing of the list`);
      }
    }
    // Bob, handed alice's cursor, sees a 400 page and nothing of hers.
    const aliceTokens = (await apiGet('/api/v1/tokens?limit=1', alice)).json<{ next_after: string }>()
      .next_after;
    const foreign = await getPage(
      ctx.testApp.app,
      `/dashboard/settings/tokens?after=${encodeURIComponent(aliceTokens)}`,
      {
        cookie: bob.sessionCookie,
      },
    );
    assert.equal(foreign.statusCode, 400);
    assert.ok(!foreign.body.includes('seeded') && !foreign.body.includes(alice.user.username));
  });
});
