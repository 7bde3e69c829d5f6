import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { type RelayGrant, resolveRelayToken } from '../../src/relay/connections.ts';
import { createAccount, type TestAccount } from './accounts.ts';
import type { TestAppContext } from './app.ts';

// The relay's starting state, built through the real API: a published agent
// of one tenant, and an approved connection to it from another tenant with
// its relay token claimed.

export interface RelayAgent {
  readonly id: string;
  readonly handle: string;
}

export interface ApprovedConnection {
  readonly connectionId: string;
  /** The claimed enc_relay_… token. */
  readonly relayToken: string;
}

function api(ctx: Pick<TestAppContext, 'testApp'>, account: TestAccount, url: string, payload?: object) {
  return ctx.testApp.app.inject({
    method: 'POST',
    url,
    headers: { authorization: `Bearer ${account.apiToken}` },
    ...(payload === undefined ? {} : { payload }),
  });
}

/** A fresh `echo` agent of `account`; `published` turns its card on through the API. */
export async function relayAgent(
  ctx: Pick<TestAppContext, 'testApp'>,
  account: TestAccount,
  published = true,
): Promise<RelayAgent> {
  const handle = `relay-${randomBytes(5).toString('hex')}`;
  const created = await api(ctx, account, '/api/v1/agents', {
    name: handle,
    handle,
    template: 'echo',
    credentials: { echo_token: `probe-${randomBytes(8).toString('hex')}` },
  });
  assert.equal(created.statusCode, 201, created.body);
  const { id } = created.json<{ id: string }>();
  if (published) {
    const card = await ctx.testApp.app.inject({
      method: 'PUT',
      url: `/api/v1/agents/${id}/card`,
      headers: { authorization: `Bearer ${account.apiToken}` },
      payload: { published: true },
    });
    assert.equal(card.statusCode, 200, card.body);
  }
  return { id, handle };
}

/** `asker` (for `askerAgentId`, or as a person) asks for `target`, `owner` approves, `asker` claims the token. */
export async function approvedConnection(
  ctx: Pick<TestAppContext, 'testApp'>,
  owner: TestAccount,
  asker: TestAccount,
  target: RelayAgent,
  askerAgentId: string | null = null,
): Promise<ApprovedConnection> {
  const requested = await api(ctx, asker, '/api/v1/connections', {
    handle: target.handle,
    agent_id: askerAgentId,
    message: 'May we talk?',
  });
  assert.equal(requested.statusCode, 201, requested.body);
  const { id } = requested.json<{ id: string }>();
  const approved = await api(ctx, owner, `/api/v1/connections/${id}/approve`);
  assert.equal(approved.statusCode, 200, approved.body);
  const claimed = await api(ctx, asker, `/api/v1/connections/${id}/relay-token`);
  assert.equal(claimed.statusCode, 201, claimed.body);
  return { connectionId: id, relayToken: claimed.json<{ relay_token: string }>().relay_token };
}

/** The relay's cast: an owner's published agent, an asker of another tenant approved to reach it, and a stranger. */
export interface RelayParties {
  readonly owner: TestAccount;
  readonly asker: TestAccount;
  /** A third tenant, with no connection. */
  readonly stranger: TestAccount;
  readonly target: RelayAgent;
  readonly connection: ApprovedConnection;
  /** What the connection's relay token resolves to. */
  readonly grant: RelayGrant;
}

export async function relayParties(ctx: Pick<TestAppContext, 'db' | 'testApp'>): Promise<RelayParties> {
  const owner = await createAccount(ctx.db, ctx.testApp);
  const asker = await createAccount(ctx.db, ctx.testApp);
  const stranger = await createAccount(ctx.db, ctx.testApp);
  const target = await relayAgent(ctx, owner);
  const connection = await approvedConnection(ctx, owner, asker, target);
  const grant = await resolveRelayToken(ctx.db.app, connection.relayToken);
  assert.ok(grant !== undefined);
  return { owner, asker, stranger, target, connection, grant };
}
