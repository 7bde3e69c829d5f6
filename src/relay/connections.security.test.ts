// Attack: a user of another tenant reaches an agent before its owner said yes — by guessing or probing handles (and telling unpublished from unknown by the answer), claiming a relay token before approval or twice, approving their own request, or keeping a token working after the owner revoked it.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import type { LightMyRequestResponse } from 'fastify';
import { createAccount, randomClientIp, type TestAccount } from '../../test/helpers/accounts.ts';
import { type ProblemBody, useTestApp } from '../../test/helpers/app.ts';
import { exhaustBucket } from '../../test/helpers/rate-limits.ts';
import { relayAgent } from '../../test/helpers/relay.ts';
import { canonicalEventParts } from '../audit/event.ts';
import { withTenant } from '../db/tenant.ts';
import { hashToken } from '../tokens.ts';
import { resolveRelayToken } from './connections.ts';

const ctx = useTestApp();
/** Owns the target agents. */
let owner: TestAccount;
/** Asks, from another tenant. */
let asker: TestAccount;
/** A third tenant, who must see nothing of the two's connection. */
let stranger: TestAccount;
let askerAgent: { id: string; handle: string };

ctx.before(async () => {
  owner = await createAccount(ctx.db, ctx.testApp);
  asker = await createAccount(ctx.db, ctx.testApp);
  stranger = await createAccount(ctx.db, ctx.testApp);
  askerAgent = await agentOf(asker, true);
});

function api(account: TestAccount, method: 'GET' | 'POST', url: string, payload?: object) {
  return ctx.testApp.app.inject({
    method,
    url,
    headers: { authorization: `Bearer ${account.apiToken}` },
    ...(payload === undefined ? {} : { payload }),
  });
}

/** A fresh echo agent of `account`, published (its card on) or not. */
const agentOf = (account: TestAccount, published: boolean) => relayAgent(ctx, account, published);

interface ConnectionBody {
  id: string;
  state: string;
  direction: string;
  token_claimed: boolean;
}

async function requested(target: string, agentId: string | null = askerAgent.id): Promise<ConnectionBody> {
  const response = await api(asker, 'POST', '/api/v1/connections', {
    handle: target,
    agent_id: agentId,
    message: 'May my agent talk to yours?',
  });
  assert.equal(response.statusCode, 201, response.body);
  return response.json<ConnectionBody>();
}

const connectionRows = async () =>
  (await ctx.db.superuser<{ count: number }[]>`select count(*)::int as count from relay_connections`)[0]
    ?.count;

/** The problem body without its request id: what must be identical between two refusals. */
function withoutRequestId(response: LightMyRequestResponse): Omit<ProblemBody, 'request_id'> {
  const { request_id: _id, ...rest } = response.json<ProblemBody>();
  return rest;
}

describe('connections: requests', () => {
  test('RLY-2: an unknown, an unpublished and an own-tenant handle get the same 404, identical apart from request_id, and write nothing', async () => {
    const unpublished = await agentOf(owner, false);
    const own = await agentOf(asker, true);
    const before = await connectionRows();
    const answers = [];
    for (const handle of [`nobody-${randomBytes(5).toString('hex')}`, unpublished.handle, own.handle]) {
      const response = await api(asker, 'POST', '/api/v1/connections', { handle, message: 'hello' });
      assert.equal(response.statusCode, 404, response.body);
      answers.push({ body: withoutRequestId(response), type: response.headers['content-type'] });
    }
    assert.deepEqual(answers[1], answers[0]);
    assert.deepEqual(answers[2], answers[0]);
    assert.equal(await connectionRows(), before);
  });

  test('RLY-2: connecting an agent to itself is a 400 naming handle, and writes nothing', async () => {
    const before = await connectionRows();
    const response = await api(asker, 'POST', '/api/v1/connections', {
      handle: askerAgent.handle,
      agent_id: askerAgent.id,
      message: 'me, myself',
    });
    assert.equal(response.statusCode, 400, response.body);
    assert.equal(response.json<ProblemBody>().errors?.[0]?.field, 'handle');
    assert.equal(await connectionRows(), before);
  });

  test('RLY-2: a message over the limit, an empty one and another tenant’s agent as the asker are 400s naming the field', async () => {
    const target = await agentOf(owner, true);
    const before = await connectionRows();
    for (const [payload, field] of [
      [{ handle: target.handle, message: 'x'.repeat(2001) }, 'message'],
      [{ handle: target.handle, message: '' }, 'message'],
      [{ handle: target.handle, message: 'hi', agent_id: (await agentOf(stranger, true)).id }, 'agent_id'],
    ] as const) {
      const response = await api(asker, 'POST', '/api/v1/connections', payload);
      assert.equal(response.statusCode, 400, response.body);
      assert.match(JSON.stringify(response.json<ProblemBody>().errors), new RegExp(field));
    }
    assert.equal(await connectionRows(), before);
  });

  test('RLY-2: the request is one row in each tenant with one id; each side lists only its own, with no id of the other tenant', async () => {
    const target = await agentOf(owner, true);
    const connection = await requested(target.handle);
    assert.equal(connection.state, 'pending');
    assert.equal(connection.direction, 'outgoing');
    const rows = await ctx.db.superuser<{ tenant_id: string; side: string }[]>`
      select tenant_id, side from relay_connections where id = ${connection.id}::uuid order by side`;
    assert.deepEqual(
      [...rows],
      [
        { tenant_id: owner.user.tenant_id, side: 'incoming' },
        { tenant_id: asker.user.tenant_id, side: 'outgoing' },
      ],
    );
    const incoming = await api(owner, 'GET', '/api/v1/connections?direction=incoming');
    assert.ok(
      incoming.json<{ connections: ConnectionBody[] }>().connections.some((c) => c.id === connection.id),
    );
    assert.doesNotMatch(
      incoming.body,
      new RegExp(`${asker.user.tenant_id}|${asker.user.id}|${askerAgent.id}`),
    );
    const outgoing = await api(asker, 'GET', '/api/v1/connections?direction=outgoing');
    assert.ok(
      outgoing.json<{ connections: ConnectionBody[] }>().connections.some((c) => c.id === connection.id),
    );
    assert.doesNotMatch(outgoing.body, new RegExp(`${owner.user.tenant_id}|${target.id}`));
    // Neither lists it in the other direction; a third tenant lists nothing of it.
    assert.doesNotMatch(
      (await api(owner, 'GET', '/api/v1/connections?direction=outgoing')).body,
      new RegExp(connection.id),
    );
    for (const direction of ['incoming', 'outgoing']) {
      const body = (await api(stranger, 'GET', `/api/v1/connections?direction=${direction}`)).body;
      assert.doesNotMatch(body, new RegExp(connection.id));
    }
    // A second open request for the same pair is refused.
    const again = await api(asker, 'POST', '/api/v1/connections', {
      handle: target.handle,
      agent_id: askerAgent.id,
      message: 'again',
    });
    assert.equal(again.statusCode, 409, again.body);
    assert.equal(again.json<ProblemBody>().code, 'connection_exists');
  });
});

describe('connections: racing requests', () => {
  test('RLY-2: the same request sent five times at once creates one connection; the others are 409 connection_exists', async () => {
    const target = await agentOf(owner, true);
    const answers = await Promise.all(
      Array.from({ length: 5 }, () =>
        api(asker, 'POST', '/api/v1/connections', { handle: target.handle, message: 'at once' }),
      ),
    );
    assert.deepEqual(answers.map((answer) => answer.statusCode).sort(), [201, 409, 409, 409, 409]);
    for (const answer of answers.filter((a) => a.statusCode === 409)) {
      assert.equal(answer.json<ProblemBody>().code, 'connection_exists');
    }
    const [row] = await ctx.db.superuser<{ count: number }[]>`
      select count(*)::int as count from relay_connections where target_handle = ${target.handle}`;
    assert.equal(row?.count, 2);
  });
});

describe('connections: approval and the relay token', () => {
  test('RLY-2, RLY-3: the token cannot be claimed before approval (the same 404 as an unknown id); after it, exactly once; only its hash is stored; revoking makes it resolve to nothing', async () => {
    const target = await agentOf(owner, true);
    const connection = await requested(target.handle);
    const early = await api(asker, 'POST', `/api/v1/connections/${connection.id}/relay-token`);
    const unknown = await api(asker, 'POST', `/api/v1/connections/${crypto.randomUUID()}/relay-token`);
    assert.equal(early.statusCode, 404, early.body);
    assert.deepEqual(withoutRequestId(early), withoutRequestId(unknown));

    const approved = await api(owner, 'POST', `/api/v1/connections/${connection.id}/approve`);
    assert.equal(approved.statusCode, 200, approved.body);
    assert.equal(approved.json<ConnectionBody>().state, 'approved');
    // The owner's side cannot claim it.
    assert.equal(
      (await api(owner, 'POST', `/api/v1/connections/${connection.id}/relay-token`)).statusCode,
      404,
    );

    const claim = await api(asker, 'POST', `/api/v1/connections/${connection.id}/relay-token`);
    assert.equal(claim.statusCode, 201, claim.body);
    assert.equal(claim.headers['cache-control'], 'no-store');
    const { relay_token: token } = claim.json<{ relay_token: string }>();
    assert.match(token, /^enc_relay_[0-9A-Za-z]{43}$/);
    const stored = await ctx.db.superuser<{ hash: string | null }[]>`
      select relay_token_hash as hash from relay_connections where id = ${connection.id}::uuid order by side`;
    assert.deepEqual(
      stored.map((row) => row.hash),
      [hashToken(token).toString('hex'), null],
    );
    const dump = JSON.stringify(await ctx.db.superuser`select * from relay_connections`);
    assert.doesNotMatch(dump, new RegExp(token));

    const second = await api(asker, 'POST', `/api/v1/connections/${connection.id}/relay-token`);
    assert.equal(second.statusCode, 409, second.body);
    assert.equal(second.json<ProblemBody>().code, 'relay_token_claimed');

    const grant = await resolveRelayToken(ctx.db.app, token);
    assert.deepEqual(grant, {
      connectionId: connection.id,
      targetTenantId: owner.user.tenant_id,
      targetAgentId: target.id,
      targetHandle: target.handle,
      requesterTenantId: asker.user.tenant_id,
      requesterUserId: asker.user.id,
      requesterHandle: askerAgent.handle,
    });

    const revoked = await api(owner, 'POST', `/api/v1/connections/${connection.id}/revoke`);
    assert.equal(revoked.statusCode, 200, revoked.body);
    assert.equal(await resolveRelayToken(ctx.db.app, token), undefined);
    const outgoing = await api(asker, 'GET', '/api/v1/connections?direction=outgoing');
    const mine = outgoing
      .json<{ connections: ConnectionBody[] }>()
      .connections.find((c) => c.id === connection.id);
    assert.equal(mine?.state, 'revoked');
  });

  test('RLY-3: resolveRelayToken fails closed on a pending or denied connection, an unknown token and a token of another kind', async () => {
    const target = await agentOf(owner, true);
    const pending = await requested(target.handle, null);
    // Plant a hash on the pending and on a denied connection, as if a claim had slipped through.
    const denied = await requested((await agentOf(owner, true)).handle, null);
    assert.equal((await api(owner, 'POST', `/api/v1/connections/${denied.id}/deny`)).statusCode, 200);
    for (const [id, token] of [
      [pending.id, `enc_relay_${'A'.repeat(43)}`],
      [denied.id, `enc_relay_${'B'.repeat(43)}`],
    ] as const) {
      await ctx.db
        .superuser`update relay_connections set relay_token_hash = ${hashToken(token).toString('hex')}
        where id = ${id}::uuid and side = 'incoming'`;
      assert.equal(await resolveRelayToken(ctx.db.app, token), undefined);
    }
    assert.equal(await resolveRelayToken(ctx.db.app, `enc_relay_${'C'.repeat(43)}`), undefined);
    assert.equal(await resolveRelayToken(ctx.db.app, asker.apiToken), undefined);
    assert.equal(await resolveRelayToken(ctx.db.app, 'not a token'), undefined);
  });

  test('RLY-2: approving your own request, deciding from the wrong side, a double approve and deny after approve are clear 4xx and change nothing', async () => {
    const target = await agentOf(owner, true);
    const connection = await requested(target.handle);
    const state = async () =>
      (
        await ctx.db.superuser<{ states: string[] }[]>`
          select array_agg(state order by side) as states from relay_connections where id = ${connection.id}::uuid`
      )[0]?.states;
    for (const decision of ['approve', 'deny', 'revoke']) {
      const own = await api(asker, 'POST', `/api/v1/connections/${connection.id}/${decision}`);
      assert.equal(own.statusCode, 403, own.body);
      assert.equal(own.json<ProblemBody>().code, 'forbidden');
      const foreign = await api(stranger, 'POST', `/api/v1/connections/${connection.id}/${decision}`);
      assert.equal(foreign.statusCode, 404, foreign.body);
    }
    assert.deepEqual(await state(), ['pending', 'pending']);
    assert.equal((await api(owner, 'POST', `/api/v1/connections/${connection.id}/approve`)).statusCode, 200);
    for (const decision of ['approve', 'deny']) {
      const again = await api(owner, 'POST', `/api/v1/connections/${connection.id}/${decision}`);
      assert.equal(again.statusCode, 409, again.body);
      assert.equal(again.json<ProblemBody>().code, 'connection_state');
    }
    assert.deepEqual(await state(), ['approved', 'approved']);
    assert.equal(
      (await api(stranger, 'POST', `/api/v1/connections/${connection.id}/relay-token`)).statusCode,
      404,
    );
  });

  test('RLY-2, AUD-1: request, approve, claim, revoke and deny are audit events on both tenants’ chains', async () => {
    const target = await agentOf(owner, true);
    const connection = await requested(target.handle);
    await api(owner, 'POST', `/api/v1/connections/${connection.id}/approve`);
    await api(asker, 'POST', `/api/v1/connections/${connection.id}/relay-token`);
    await api(owner, 'POST', `/api/v1/connections/${connection.id}/revoke`);
    const other = await requested((await agentOf(owner, true)).handle, null);
    await api(owner, 'POST', `/api/v1/connections/${other.id}/deny`);
    const events = await ctx.db.superuser<{ tenant_id: string; action: string; target: string }[]>`
      select tenant_id, action, target from audit_events
      where target in (${`connection:${connection.id}`}, ${`connection:${other.id}`}) order by tenant_id, seq`;
    for (const tenant of [owner.user.tenant_id, asker.user.tenant_id]) {
      assert.deepEqual(
        events.filter((event) => event.tenant_id === tenant).map((event) => [event.target, event.action]),
        [
          [`connection:${connection.id}`, 'relay.connection_requested'],
          [`connection:${connection.id}`, 'relay.connection_approved'],
          [`connection:${connection.id}`, 'relay.token_claimed'],
          [`connection:${connection.id}`, 'relay.connection_revoked'],
          [`connection:${other.id}`, 'relay.connection_requested'],
          [`connection:${other.id}`, 'relay.connection_denied'],
        ],
      );
    }
    // No event carries the token.
    const data = JSON.stringify(
      await ctx.db.superuser`select data from audit_events where action = 'relay.token_claimed'`,
    );
    assert.doesNotMatch(data, /enc_relay_/);
  });

  test('RLY-2, AUD-1: the peer chain takes only relay events about the connection itself', async () => {
    const target = await agentOf(owner, true);
    const connection = await requested(target.handle);
    const appendAsAsker = (action: string, eventTarget: string, tenant = owner.user.tenant_id) =>
      withTenant(ctx.db.app, asker.user.tenant_id, async (tx) => {
        const parts = canonicalEventParts({
          tenant,
          actor: `user:${asker.user.id}`,
          action,
          target: eventTarget,
          data: {},
        });
        await tx`select seq from enclave.relay_audit_append_peer(
          ${connection.id}::uuid, ${parts.beforeSeq}, ${parts.beforeTs}, ${parts.afterTs})`;
      });
    const head = async () =>
      (
        await ctx.db.superuser<{ seq: string }[]>`
        select seq::text from audit_heads where tenant_id = ${owner.user.tenant_id}::uuid`
      )[0]?.seq;
    const before = await head();
    for (const [action, eventTarget, tenant] of [
      ['user.deleted', `connection:${connection.id}`, owner.user.tenant_id],
      ['relay.connection_approved', `agent:${target.id}`, owner.user.tenant_id],
      ['relay.connection_approved', `connection:${connection.id}`, stranger.user.tenant_id],
    ] as const) {
      await assert.rejects(
        appendAsAsker(action, eventTarget, tenant),
        /only relay events about this connection/,
      );
    }
    assert.equal(await head(), before);
    await appendAsAsker('relay.connection_note', `connection:${connection.id}`);
    assert.notEqual(await head(), before);
  });

  test('RLY-2: a list pages with next_after, and a cursor of the other direction is refused', async () => {
    const first = await api(owner, 'GET', '/api/v1/connections?direction=incoming&limit=1');
    assert.equal(first.statusCode, 200, first.body);
    const { next_after: next } = first.json<{ next_after: string | null }>();
    assert.ok(next !== null);
    const second = await api(owner, 'GET', `/api/v1/connections?direction=incoming&limit=1&after=${next}`);
    assert.equal(second.statusCode, 200, second.body);
    assert.notEqual(
      second.json<{ connections: ConnectionBody[] }>().connections[0]?.id,
      first.json<{ connections: ConnectionBody[] }>().connections[0]?.id,
    );
    const crossed = await api(owner, 'GET', `/api/v1/connections?direction=outgoing&limit=1&after=${next}`);
    assert.equal(crossed.statusCode, 400, crossed.body);
    assert.equal(crossed.json<ProblemBody>().code, 'cursor_invalid');
  });
});

test('RLY-5: past its hourly connection requests a user is answered 429 with Retry-After, before any lookup, and nothing is written', async () => {
  const flooder = await createAccount(ctx.db, ctx.testApp);
  const ask = () =>
    ctx.testApp.app.inject({
      method: 'POST',
      url: '/api/v1/connections',
      remoteAddress: `10.77.${randomBytes(1)[0]}.${randomBytes(1)[0]}`,
      headers: { authorization: `Bearer ${flooder.apiToken}` },
      payload: { handle: 'no-such-agent-here', message: 'hello' },
    });
  for (let n = 0; n < 20; n++) assert.equal((await ask()).statusCode, 404);
  const refused = await ask();
  assert.equal(refused.statusCode, 429, refused.body);
  assert.equal(refused.json<ProblemBody>().code, 'rate_limited');
  assert.match(String(refused.headers['retry-after']), /^\d+$/);
  const rows = await ctx.db.superuser<{ n: number }[]>`
    select count(*)::int as n from enclave.relay_connections where requester_user_id = ${flooder.user.id}::uuid`;
  assert.equal(rows[0]?.n, 0);
});

test('RLY-5: past its hourly connection requests (relay_connect_ip) a client address is answered 429 with Retry-After, whoever signs in there, before any lookup, and nothing is written; another address is served', async () => {
  const target = await agentOf(owner, true);
  const address = randomClientIp();
  await exhaustBucket(ctx.db, 'relay_connect_ip', address);
  const ask = async (remoteAddress: string) => {
    // A fresh user each time: their own bucket is full, so only the address's can refuse them.
    const user = await createAccount(ctx.db, ctx.testApp);
    const response = await ctx.testApp.app.inject({
      method: 'POST',
      url: '/api/v1/connections',
      remoteAddress,
      headers: { authorization: `Bearer ${user.apiToken}` },
      payload: { handle: target.handle, message: 'hello' },
    });
    const rows = await ctx.db.superuser<{ n: number }[]>`
      select count(*)::int as n from enclave.relay_connections where requester_user_id = ${user.user.id}::uuid`;
    return { response, rows: rows[0]?.n };
  };
  const refused = await ask(address);
  assert.equal(refused.response.statusCode, 429, refused.response.body);
  assert.equal(refused.response.json<ProblemBody>().code, 'rate_limited');
  assert.match(String(refused.response.headers['retry-after']), /^\d+$/);
  assert.equal(refused.rows, 0);
  const served = await ask(randomClientIp());
  assert.equal(served.response.statusCode, 201, served.response.body);
});
