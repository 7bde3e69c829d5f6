import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createAccount, type TestAccount } from '../../test/helpers/accounts.ts';
import { type ProblemBody, useTestApp } from '../../test/helpers/app.ts';
import { main } from '../cli/main.ts';
import { executeRelayCommand, parseRelayCommand } from '../cli/relay.ts';
import { UsageError } from '../cli/usage-error.ts';
import type { DirectoryPage } from './directory.ts';
import type { Listing } from './listings.ts';

// RLY-1, the directory half: a published card is readable by anyone who knows
// its handle, but appears in the searchable directory only after the
// operator approved its listing in a manual review (the `enclave relay`
// command or /operator/listings). Unpublishing takes it out at once; a card
// whose words changed since approval waits for a new review. An entry shows
// what the card shows, never the tenant, the owner or their email.

const ctx = useTestApp();
let owner: TestAccount;
let member: TestAccount;
let reader: TestAccount;
let operator: TestAccount;
let serial = 0;
const origin = () => new URL(ctx.testApp.config.publicUrl).origin;

ctx.before(async () => {
  owner = await createAccount(ctx.db, ctx.testApp, { email: `dir-owner-${process.pid}@example.test` });
  member = await createAccount(ctx.db, ctx.testApp, { kind: 'member', tenantOf: owner });
  reader = await createAccount(ctx.db, ctx.testApp);
  operator = await createAccount(ctx.db, ctx.testApp, { kind: 'operator' });
});

function api(
  account: TestAccount,
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE',
  url: string,
  payload?: object,
) {
  return ctx.testApp.app.inject({
    method,
    url,
    headers: { authorization: `Bearer ${account.apiToken}` },
    ...(payload === undefined ? {} : { payload }),
  });
}

function pageAs(account: TestAccount, method: 'GET' | 'POST', url: string, form?: Record<string, string>) {
  return ctx.testApp.app.inject({
    method,
    url,
    headers: {
      cookie: account.sessionCookie,
      origin: origin(),
      ...(form === undefined ? {} : { 'content-type': 'application/x-www-form-urlencoded' }),
    },
    ...(form === undefined ? {} : { payload: new URLSearchParams(form).toString() }),
  });
}

async function newAgent(options: { creator?: TestAccount; publish?: boolean; words?: string } = {}) {
  serial += 1;
  const handle = `dir-${process.pid}-${serial}`;
  const creator = options.creator ?? owner;
  const created = await api(creator, 'POST', '/api/v1/agents', {
    name: `Finder ${serial}`,
    handle,
    description: options.words ?? `Answers questions, number ${serial}.`,
    template: 'echo',
  });
  assert.equal(created.statusCode, 201, created.body);
  const id = created.json<{ id: string }>().id;
  if (options.publish !== false) {
    const published = await api(creator, 'PUT', `/api/v1/agents/${id}/card`, { published: true });
    assert.equal(published.statusCode, 200, published.body);
  }
  return { id, handle };
}

const askListing = (id: string, account = owner) => api(account, 'POST', `/api/v1/agents/${id}/listing`);

async function directory(query: Record<string, string> = {}, account = reader): Promise<DirectoryPage> {
  const response = await api(account, 'GET', `/api/v1/directory?${new URLSearchParams(query)}`);
  assert.equal(response.statusCode, 200, response.body);
  return response.json<DirectoryPage>();
}

async function handlesFound(q: string, account = reader): Promise<string[]> {
  return (await directory({ q, limit: '100' }, account)).entries.map((entry) => entry.handle);
}

/** Runs `enclave relay …` as the console would, on the app's pool; its exit status and output. */
async function relayCli(...rest: string[]): Promise<{ status: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const reasonAt = rest.indexOf('--reason');
  const reason = reasonAt === -1 ? undefined : rest[reasonAt + 1];
  const args = reasonAt === -1 ? rest : rest.slice(0, reasonAt);
  const command = parseRelayCommand({ rest: args, reason });
  const status = await executeRelayCommand(ctx.db.app, command, {
    out: (line) => out.push(line),
    err: (line) => err.push(line),
  });
  return { status, out, err };
}

async function auditActions(
  agentId: string,
): Promise<{ action: string; actor: string; tenant_id: string }[]> {
  return ctx.db.superuser<{ action: string; actor: string; tenant_id: string }[]>`
    select action, actor, tenant_id from audit_events
    where target = ${`agent:${agentId}`} and action like 'agent.listing_%' order by seq`;
}

describe('relay directory', () => {
  test('RLY-1: a published card is not in the directory until an operator approves its listing', async () => {
    const { id, handle } = await newAgent();
    const asked = await askListing(id);
    assert.equal(asked.statusCode, 200, asked.body);
    const listing = asked.json<Listing>();
    assert.equal(listing.state, 'pending');
    assert.equal(listing.listed, false);
    // Still readable by its handle, as every published card is; not in the directory.
    assert.equal(
      (await ctx.testApp.app.inject({ method: 'GET', url: `/agents/${handle}/card.json` })).statusCode,
      200,
    );
    assert.deepEqual(await handlesFound(handle), []);

    const queued = await relayCli('listings');
    assert.equal(queued.status, 0);
    const row = queued.out.find((line) => line.startsWith(`${handle}\t`));
    assert.ok(row !== undefined, queued.out.join('\n'));
    assert.match(
      row,
      new RegExp(`^${handle}\\tFinder \\d+\\tAnswers questions, number \\d+\\.\\t\\S+Z\\tnew$`),
    );

    const approved = await relayCli('approve', handle);
    assert.deepEqual([approved.status, approved.err], [0, []]);
    const page = await directory({ q: handle });
    assert.equal(page.entries.length, 1);
    const [entry] = page.entries;
    assert.equal(entry?.handle, handle);
    assert.match(entry?.card_url ?? '', new RegExp(`/agents/${handle}/card\\.json$`));
    assert.deepEqual(Object.keys(entry ?? {}).sort(), [
      'card_url',
      'description',
      'handle',
      'listed_at',
      'name',
      'skills',
    ]);
    assert.equal(entry?.skills[0]?.id, 'echo');
    // Nothing of the owner's tenant: not its id, its name, the owner's email or an agent id.
    const body = JSON.stringify(page);
    for (const secret of [owner.user.tenant_id, owner.user.email, owner.user.id, id]) {
      assert.ok(!body.includes(secret), `the directory shows ${secret}`);
    }
    // Out of the queue once decided; the owner sees it listed.
    assert.ok(!(await relayCli('listings')).out.some((line) => line.startsWith(`${handle}\t`)));
    assert.equal((await askListing(id)).json<Listing>().listed, true);
    assert.deepEqual(
      (await auditActions(id)).map((event) => [event.action, event.actor, event.tenant_id]),
      [
        ['agent.listing_requested', `token:${owner.apiTokenId}`, owner.user.tenant_id],
        ['agent.listing_approved', 'operator:cli', owner.user.tenant_id],
      ],
    );
  });

  test('RLY-1: unpublishing takes an approved agent out of the directory', async () => {
    const { id, handle } = await newAgent();
    await askListing(id);
    assert.equal((await relayCli('approve', handle)).status, 0);
    assert.deepEqual(await handlesFound(handle), [handle]);

    await api(owner, 'PUT', `/api/v1/agents/${id}/card`, { published: false });
    assert.deepEqual(await handlesFound(handle), []);
    // Re-publishing the unchanged card needs no new review.
    await api(owner, 'PUT', `/api/v1/agents/${id}/card`, { published: true });
    assert.deepEqual(await handlesFound(handle), [handle]);
  });

  test('RLY-1: a card whose name, description or template changed since approval waits for a new review', async () => {
    const { id, handle } = await newAgent();
    await askListing(id);
    await relayCli('approve', handle);
    const renamed = await api(owner, 'PATCH', `/api/v1/agents/${id}`, {
      description: 'Now it does something else.',
    });
    assert.equal(renamed.statusCode, 200, renamed.body);
    assert.deepEqual(await handlesFound(handle), []);
    const listing = (await askListing(id)).json<Listing>();
    assert.deepEqual(
      [listing.state, listing.listed, listing.changed_since_approval],
      ['approved', false, true],
    );
    const queued = (await relayCli('listings')).out.find((line) => line.startsWith(`${handle}\t`));
    assert.match(queued ?? '', /\tNow it does something else\.\t\S+\tchanged$/);
    await relayCli('approve', handle);
    assert.deepEqual(await handlesFound(handle), [handle]);
  });

  test('RLY-1: rejecting shows the reason to the owner; asking again re-queues; withdrawing takes it out; each an audit event', async () => {
    const { id, handle } = await newAgent();
    await askListing(id);
    const rejected = await relayCli('reject', handle, '--reason', 'Describe what it does, please.');
    assert.equal(rejected.status, 0);
    let listing = (await api(owner, 'DELETE', `/api/v1/agents/${id}/listing`)).json<Listing>();
    assert.deepEqual([listing.state, listing.reason], ['rejected', 'Describe what it does, please.']);
    const agentPage = await pageAs(owner, 'GET', `/dashboard/agents/${id}`);
    assert.match(agentPage.body, /Listing rejected by the operator: Describe what it does, please\./);

    listing = (await askListing(id)).json<Listing>();
    assert.deepEqual([listing.state, listing.reason], ['pending', null]);
    await relayCli('approve', handle);
    listing = (await api(owner, 'DELETE', `/api/v1/agents/${id}/listing`)).json<Listing>();
    assert.deepEqual([listing.state, listing.listed], ['withdrawn', false]);
    assert.deepEqual(await handlesFound(handle), []);
    // Asking for the state it has records nothing.
    await api(owner, 'DELETE', `/api/v1/agents/${id}/listing`);
    assert.deepEqual(
      (await auditActions(id)).map((event) => event.action),
      [
        'agent.listing_requested',
        'agent.listing_rejected',
        'agent.listing_requested',
        'agent.listing_approved',
        'agent.listing_withdrawn',
      ],
    );
  });

  test('RLY-1: asking needs a published card (409); a member cannot ask for a colleague’s agent; another tenant’s agent and an unknown id are the same 404', async () => {
    const unpublished = await newAgent({ publish: false });
    const refused = await askListing(unpublished.id);
    assert.equal(refused.statusCode, 409);
    assert.equal(refused.json<ProblemBody>().code, 'card_unpublished');
    const none = await api(owner, 'DELETE', `/api/v1/agents/${unpublished.id}/listing`);
    assert.equal(none.json<ProblemBody>().code, 'listing_state');

    const { id } = await newAgent();
    const forbidden = await askListing(id, member);
    assert.equal(forbidden.statusCode, 403);
    const foreign = await askListing(id, reader);
    const unknown = await askListing('00000000-0000-4000-8000-000000000000', reader);
    assert.equal(foreign.statusCode, 404);
    const { request_id: _a, ...foreignBody } = foreign.json<ProblemBody>();
    const { request_id: _b, ...unknownBody } = unknown.json<ProblemBody>();
    assert.deepEqual(foreignBody, unknownBody);
    const [count] = await ctx.db.superuser<{ n: number }[]>`
      select count(*)::int as n from relay_listings where agent_id in (${unpublished.id}::uuid, ${id}::uuid)`;
    assert.equal(count?.n, 0);
  });

  test('RLY-1: the directory searches handle, name, description and skills without case, pages by cursor, and refuses bad input', async () => {
    const word = `zebra${process.pid}`;
    const agents = [];
    for (let i = 0; i < 3; i += 1) {
      const agent = await newAgent({ words: `Knows about ${word.toUpperCase()} stripes.` });
      await askListing(agent.id);
      await relayCli('approve', agent.handle);
      agents.push(agent.handle);
    }
    assert.deepEqual((await handlesFound(word)).sort(), [...agents].sort());
    assert.ok((await handlesFound(agents[0]?.toUpperCase() ?? '')).includes(agents[0] ?? ''));
    assert.ok((await handlesFound('ECHO')).length >= 3, 'the skill (template) words match');

    const first = await directory({ q: word, limit: '2' });
    assert.equal(first.entries.length, 2);
    assert.ok(first.next_after !== null);
    const second = await directory({ q: word, limit: '2', after: first.next_after });
    assert.equal(second.entries.length, 1);
    assert.equal(second.next_after, null);
    // Newest listing first, no entry twice.
    assert.deepEqual(
      [...first.entries, ...second.entries].map((e) => e.handle),
      [...agents].reverse(),
    );

    const bad = async (query: Record<string, string>, field: string) => {
      const response = await api(reader, 'GET', `/api/v1/directory?${new URLSearchParams(query)}`);
      assert.equal(response.statusCode, 400, `${JSON.stringify(query)}: ${response.body}`);
      assert.match(response.body, new RegExp(field));
    };
    await bad({ q: 'x'.repeat(101) }, 'q');
    await bad({ q: 'two\nlines' }, 'q');
    await bad({ limit: '0' }, 'limit');
    await bad({ limit: '101' }, 'limit');
    await bad({ after: 'not-a-cursor' }, 'after');
    // A cursor of another search, or of another tenant's reader, is not one of this list.
    await bad({ q: 'other', after: first.next_after }, 'after');
    const elsewhere = await api(
      owner,
      'GET',
      `/api/v1/directory?${new URLSearchParams({ q: word, after: first.next_after })}`,
    );
    assert.equal(elsewhere.json<ProblemBody>().code, 'cursor_invalid');
    assert.equal((await ctx.testApp.app.inject({ method: 'GET', url: '/api/v1/directory' })).statusCode, 401);
  });

  test('RLY-1: enclave relay refuses bad arguments and unknown handles with clear errors', async () => {
    const usage = (rest: string[], reason: string | undefined, says: RegExp) =>
      assert.throws(
        () => parseRelayCommand({ rest, reason }),
        (error: unknown) => error instanceof UsageError && says.test(error.message),
      );
    usage([], undefined, /needs an action: listings, approve or reject/);
    usage(['frob'], undefined, /unknown relay action "frob"/);
    usage(['approve'], undefined, /needs the agent's HANDLE/);
    usage(['approve', 'a', 'b'], undefined, /takes one HANDLE/);
    usage(['approve', 'Not_A_Handle'], undefined, /"Not_A_Handle" is not an agent handle/);
    usage(['approve', 'some-agent'], 'why', /--reason is an option of "relay reject"/);
    usage(['listings', 'x'], undefined, /takes no arguments/);
    usage(['reject', 'some-agent'], 'x'.repeat(501), /--reason must be 1 to 500 characters/);
    usage(['reject', 'some-agent'], 'two\nlines', /--reason must be 1 to 500 characters on one line/);

    // Through the command itself: a usage mistake is one line on stderr and exit 2, before any database.
    for (const [argv, says] of [
      [['relay', 'approve'], /^enclave: "relay approve" needs the agent's HANDLE .*Run "enclave --help"\.$/],
      [['relay', 'listings', '--reason', 'x'], /^enclave: --reason is an option of "relay reject"/],
      [['doctor', '--reason', 'x'], /^enclave: --reason is an option of "relay reject", not "doctor"/],
    ] as const) {
      const err: string[] = [];
      const status = await main(argv, {}, { out: () => {}, err: (line) => err.push(line) });
      assert.equal(status, 2, argv.join(' '));
      assert.equal(err.length, 1);
      assert.match(err[0] ?? '', says);
    }
    const help: string[] = [];
    assert.equal(await main(['relay', '--help'], {}, { out: (line) => help.push(line), err: () => {} }), 0);
    assert.match(help.join('\n'), /enclave relay reject HANDLE \[--reason TEXT\]/);

    const unknown = await relayCli('approve', 'no-such-agent-here');
    assert.deepEqual(
      [unknown.status, unknown.err],
      [1, ['enclave: no listing of no-such-agent-here awaits review (see "enclave relay listings")']],
    );
    // Published but never asked for: not in the queue either.
    const { handle } = await newAgent();
    assert.equal((await relayCli('reject', handle)).status, 1);
  });

  test('RLY-1: the operator page lists pending requests with approve and reject forms; anyone else gets a 404', async () => {
    const { id, handle } = await newAgent();
    // Asked for from the agent page, with a plain form; an unpublished card is a 409 page saying why.
    const unpublished = await newAgent({ publish: false });
    const early = await pageAs(owner, 'POST', `/dashboard/agents/${unpublished.id}/listing`, {
      action: 'request',
    });
    assert.equal(early.statusCode, 409);
    assert.match(early.body, /publish the agent’s card before asking for a directory listing/);
    const bogus = await pageAs(owner, 'POST', `/dashboard/agents/${unpublished.id}/listing`, {
      action: 'frob',
    });
    assert.equal(bogus.statusCode, 400);
    const asked = await pageAs(owner, 'POST', `/dashboard/agents/${id}/listing`, { action: 'request' });
    assert.equal(asked.statusCode, 303);
    const agentPage = (await pageAs(owner, 'GET', `/dashboard/agents/${id}`)).body;
    assert.match(agentPage, /waits for the operator’s review/);
    assert.ok(agentPage.includes('Withdraw directory listing'));

    for (const outsider of [owner, reader]) {
      assert.equal((await pageAs(outsider, 'GET', '/operator/listings')).statusCode, 404);
      assert.equal(
        (await pageAs(outsider, 'POST', `/operator/listings/${handle}/approve`, {})).statusCode,
        404,
      );
    }
    const review = await pageAs(operator, 'GET', '/operator/listings');
    assert.equal(review.statusCode, 200);
    assert.ok(review.body.includes(`action="/operator/listings/${handle}/approve"`));
    assert.ok(review.body.includes(`action="/operator/listings/${handle}/reject"`));
    // CSRF: a cross-site form post is refused before it runs.
    const crossSite = await ctx.testApp.app.inject({
      method: 'POST',
      url: `/operator/listings/${handle}/approve`,
      headers: { cookie: operator.sessionCookie, origin: 'https://evil.example' },
    });
    assert.equal(crossSite.statusCode, 403);
    const tooLong = await pageAs(operator, 'POST', `/operator/listings/${handle}/reject`, {
      reason: 'x'.repeat(501),
    });
    assert.equal(tooLong.statusCode, 400);
    const approved = await pageAs(operator, 'POST', `/operator/listings/${handle}/approve`, {});
    assert.equal(approved.statusCode, 303, approved.body);
    assert.deepEqual(await handlesFound(handle), [handle]);
    const again = await pageAs(operator, 'POST', `/operator/listings/${handle}/approve`, {});
    assert.equal(again.statusCode, 404);
    assert.match(again.body, /No listing of this handle awaits review/);
    const [event] = (await auditActions(id)).filter((e) => e.action === 'agent.listing_approved');
    assert.deepEqual([event?.actor, event?.tenant_id], [`user:${operator.user.id}`, owner.user.tenant_id]);
  });

  test('RLY-1: the directory page searches, pages, and links each card and a Connect form, without JavaScript', async () => {
    const { id, handle } = await newAgent({ words: 'A <b>bold</b> helper.' });
    await askListing(id);
    await relayCli('approve', handle);
    const found = await pageAs(reader, 'GET', `/directory?${new URLSearchParams({ q: handle })}`);
    assert.equal(found.statusCode, 200);
    assert.ok(found.body.includes('<form method="get" action="/directory"'));
    assert.ok(found.body.includes(`/agents/${handle}/card.json`));
    assert.ok(found.body.includes(`href="/dashboard/connections?handle=${handle}#connect"`));
    assert.ok(found.body.includes('A &lt;b&gt;bold&lt;/b&gt; helper.'), 'owner text is escaped');
    assert.ok(!found.body.includes(owner.user.email));
    const connect = await pageAs(reader, 'GET', `/dashboard/connections?handle=${handle}`);
    assert.ok(connect.body.includes(`value="${handle}"`), 'the Connect link fills in the handle');
    assert.equal((await pageAs(reader, 'GET', `/directory?q=${'x'.repeat(101)}`)).statusCode, 400);
    assert.equal((await pageAs(reader, 'GET', '/directory?after=forged')).statusCode, 400);
    const anonymous = await ctx.testApp.app.inject({ method: 'GET', url: '/directory' });
    assert.equal(anonymous.statusCode, 303, 'sign-in first');
  });
});
