import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import {
  createAccount,
  createdAccount,
  loginAgain,
  mailedInviteToken,
  sessionOf,
  type TestAccount,
  testAccountsService,
  testClient,
  uniqueName,
} from '../../test/helpers/accounts.ts';
import { useTestApp } from '../../test/helpers/app.ts';
import { PLATFORM_TENANT } from '../audit/append.ts';
import { withTenant } from '../db/tenant.ts';
import { accountKey } from '../http/rate-limits.ts';
import { bootstrapOperatorInvite, createInvite } from './invites.ts';
import { createLinksService, type LinksService, mintLinkForMail } from './links.ts';
import type { AccountsService, Principal } from './service.ts';

// AUD-1: every security-relevant action of the accounts capability appends
// its event in the action's own transaction: the right chain, the right
// actor and target, data made of ids, flags and counts — and nothing when
// the action rolls back.

const ctx = useTestApp();
let accounts: AccountsService;
let links: LinksService;
/** Every secret handed out in this file; the last test looks for each in every stored event. */
const secrets: string[] = [];

ctx.before(() => {
  accounts = testAccountsService(ctx.db, ctx.testApp);
  links = createLinksService({
    sql: ctx.db.app,
    rateLimits: ctx.testApp.rateLimits,
    passwords: ctx.testApp.app.passwords,
  });
});

interface EventView {
  seq: number;
  actor: string;
  action: string;
  target: string | null;
  data: Record<string, unknown>;
}

/** A tenant's chain as that tenant reads it (the app role, bound to the tenant). */
async function chain(tenantId: string): Promise<EventView[]> {
  const rows = await withTenant(
    ctx.db.app,
    tenantId,
    (tx) =>
      tx<(Omit<EventView, 'seq'> & { seq: string })[]>`
      select seq, actor, action, target, data from audit_events order by seq`,
  );
  return rows.map((row) => ({
    seq: Number(row.seq),
    actor: row.actor,
    action: row.action,
    target: row.target,
    data: row.data,
  }));
}

/** The events appended to a tenant's chain while `action` ran. */
async function appendedBy(tenantId: string, action: () => Promise<unknown>): Promise<EventView[]> {
  const before = (await chain(tenantId)).length;
  await action();
  return (await chain(tenantId)).slice(before);
}

function summary(events: readonly EventView[]) {
  return events.map(({ seq: _seq, ...event }) => event);
}

async function account(options: Parameters<typeof createAccount>[2] = {}): Promise<TestAccount> {
  const created = await createAccount(ctx.db, ctx.testApp, options);
  secrets.push(created.password, created.sessionToken, created.apiToken);
  return created;
}

function sessionPrincipal(of: TestAccount, sessionId: string): Principal {
  return { ...of.principal, sessionId };
}

const inAWeek = () => new Date(Date.now() + 7 * 86400_000);

describe('invites and signup', () => {
  test("AUD-1: the first operator's invite minted at start is recorded by system as invite.created, and the earlier one it replaces as invite.revoked, in the platform's chain", async () => {
    // Runs before this file signs any operator up: until then, every start mints a fresh invite.
    const earlier = await bootstrapOperatorInvite(ctx.db.app, undefined);
    const later = await bootstrapOperatorInvite(ctx.db.app, undefined);
    assert.ok(earlier !== undefined && later !== undefined);
    secrets.push(earlier.token, later.token);
    const events = (await chain(PLATFORM_TENANT)).filter((event) =>
      [`invite:${earlier.invite.id}`, `invite:${later.invite.id}`].includes(event.target ?? ''),
    );
    assert.deepEqual(
      events.map((event) => [event.actor, event.action, event.target]),
      [
        ['system', 'invite.created', `invite:${earlier.invite.id}`],
        ['system', 'invite.revoked', `invite:${earlier.invite.id}`],
        ['system', 'invite.created', `invite:${later.invite.id}`],
      ],
    );
  });

  test("AUD-1: a signup appends tenant.created and account.created (actor anonymous) to the new tenant's chain and invite.accepted to the platform's, in the signup's transaction", async () => {
    const email = `${uniqueName('new')}@example.test`;
    const invite = await createInvite(
      ctx.db.app,
      { kind: 'tenant', email, tenantId: null, createdBy: null, expiresAt: inAWeek() },
      'operator:cli',
    );
    secrets.push(invite.token);
    const password = `pw-${randomUUID()}`;
    secrets.push(password);
    const { user, session } = createdAccount(
      await accounts.signup({ invite: invite.token, email, username: uniqueName(), password }, testClient()),
    );
    secrets.push(session.token);
    const inviteId = invite.invite.id;
    assert.deepEqual(summary(await chain(user.tenant_id)), [
      {
        actor: 'anonymous',
        action: 'tenant.created',
        target: `tenant:${user.tenant_id}`,
        data: { tenant_id: user.tenant_id, invite_id: inviteId },
      },
      {
        actor: 'anonymous',
        action: 'account.created',
        target: `user:${user.id}`,
        data: {
          user_id: user.id,
          role: 'owner',
          is_operator: false,
          invite_id: inviteId,
          session_id: session.id,
        },
      },
    ]);
    assert.deepEqual(
      summary((await chain(PLATFORM_TENANT)).filter((event) => event.target === `invite:${inviteId}`)),
      [
        {
          actor: 'operator:cli',
          action: 'invite.created',
          target: `invite:${inviteId}`,
          data: { invite_id: inviteId, kind: 'tenant', expires_at: invite.invite.expires_at.toISOString() },
        },
        {
          actor: 'anonymous',
          action: 'invite.accepted',
          target: `invite:${inviteId}`,
          data: { invite_id: inviteId, kind: 'tenant', user_id: user.id },
        },
      ],
    );
    // One transaction wrote the user, the invite's redemption and all three events.
    const writers = await ctx.db.superuser<{ xmin: string }[]>`
      select xmin::text from enclave.users where id = ${user.id}::uuid
      union all select xmin::text from enclave.invites where id = ${inviteId}::uuid
      union all select xmin::text from enclave.audit_events
        where (tenant_id = ${user.tenant_id}::uuid)
           or (tenant_id = ${PLATFORM_TENANT}::uuid and action = 'invite.accepted' and target = ${`invite:${inviteId}`})`;
    assert.equal(writers.length, 5);
    assert.equal(new Set(writers.map((row) => row.xmin)).size, 1, JSON.stringify(writers));
  });

  test("AUD-1: an owner's member invites are created, accepted and revoked in the tenant's chain by user:<id>; an operator's signup invites in the platform's", async () => {
    const owner = await account();
    const tenant = owner.user.tenant_id;
    const created = await accounts.createInvite(owner.principal, {
      email: `${uniqueName('member')}@example.test`,
      kind: 'member',
      expiresAt: inAWeek(),
    });
    const id = created.invite.id;
    const [createdEvent] = (await chain(tenant)).slice(-1);
    assert.deepEqual(createdEvent && summary([createdEvent]), [
      {
        actor: `user:${owner.user.id}`,
        action: 'invite.created',
        target: `invite:${id}`,
        data: { invite_id: id, kind: 'member', expires_at: created.invite.expires_at.toISOString() },
      },
    ]);

    const mailedToken = await mailedInviteToken(ctx.db, created.invite);
    secrets.push(mailedToken);
    const member = await appendedBy(tenant, () =>
      accounts.signup(
        {
          invite: mailedToken,
          email: created.invite.email ?? '',
          username: uniqueName('member'),
          password: `pw-${randomUUID()}`,
        },
        testClient(),
      ),
    );
    assert.deepEqual(
      member.map((event) => [event.actor, event.action]),
      [
        ['anonymous', 'account.created'],
        ['anonymous', 'invite.accepted'],
      ],
    );
    assert.equal(member[1]?.target, `invite:${id}`);

    const second = await accounts.createInvite(owner.principal, {
      email: `${uniqueName('member')}@example.test`,
      kind: 'member',
      expiresAt: inAWeek(),
    });
    const revoked = await appendedBy(tenant, () => accounts.revokeInvite(owner.principal, second.invite.id));
    assert.deepEqual(summary(revoked), [
      {
        actor: `user:${owner.user.id}`,
        action: 'invite.revoked',
        target: `invite:${second.invite.id}`,
        data: { invite_id: second.invite.id, kind: 'member' },
      },
    ]);
    // Revoking it again revokes nothing and records nothing.
    assert.deepEqual(
      await appendedBy(tenant, () => accounts.revokeInvite(owner.principal, second.invite.id)),
      [],
    );

    const operator = await account({ kind: 'operator' });
    const platformBefore = (await chain(PLATFORM_TENANT)).length;
    const operatorBefore = (await chain(operator.user.tenant_id)).length;
    const signupInvite = await accounts.createInvite(operator.principal, {
      email: `${uniqueName('tenant')}@example.test`,
      kind: 'tenant',
      expiresAt: inAWeek(),
    });
    assert.ok(signupInvite.token !== undefined, 'an operator is shown the signup link');
    secrets.push(signupInvite.token);
    assert.equal(await accounts.revokeInvite(operator.principal, signupInvite.invite.id), true);
    assert.deepEqual(
      (await chain(PLATFORM_TENANT))
        .slice(platformBefore)
        .map((event) => [event.actor, event.action, event.target]),
      [
        [`user:${operator.user.id}`, 'invite.created', `invite:${signupInvite.invite.id}`],
        [`user:${operator.user.id}`, 'invite.revoked', `invite:${signupInvite.invite.id}`],
      ],
    );
    assert.equal(
      (await chain(operator.user.tenant_id)).length,
      operatorBefore,
      "nothing in the operator's own tenant",
    );
  });
});

describe('sign-in and sessions', () => {
  test('AUD-1: a sign-in appends session.login by user:<id>, with the new session as target', async () => {
    const user = await account();
    let sessionId = '';
    const events = await appendedBy(user.user.tenant_id, async () => {
      const session = sessionOf(
        await accounts.login(
          { login: user.user.username, password: user.password, previousSessionToken: user.sessionToken },
          testClient(),
        ),
      );
      secrets.push(session.token);
      sessionId = session.id;
    });
    assert.deepEqual(summary(events), [
      {
        actor: `user:${user.user.id}`,
        action: 'session.login',
        target: `session:${sessionId}`,
        data: {
          user_id: user.user.id,
          session_id: sessionId,
          password_rehashed: false,
          sessions_replaced: 1,
          first_step: 'password',
          second_step: null,
        },
      },
    ]);
  });

  test("AUD-1: a failed sign-in of an existing account appends session.login_failed (actor anonymous, target user:<id>) to its tenant's chain", async () => {
    const user = await account();
    const wrong = `wrong-${randomUUID()}`;
    secrets.push(wrong);
    const events = await appendedBy(user.user.tenant_id, () =>
      assert.rejects(
        accounts.login(
          { login: user.user.username, password: wrong, previousSessionToken: undefined },
          testClient(),
        ),
        { code: 'login_failed' },
      ),
    );
    assert.deepEqual(summary(events), [
      {
        actor: 'anonymous',
        action: 'session.login_failed',
        target: `user:${user.user.id}`,
        data: { user_id: user.user.id },
      },
    ]);
  });

  test("AUD-1: a failed sign-in of an unknown login appends session.login_failed to the platform's chain with only accountKey(login), never the login or password typed", async () => {
    // What someone types as a login may be a password pasted into the wrong field.
    const login = `Pasted-Password-${randomUUID()}`;
    const password = `typed-${randomUUID()}`;
    secrets.push(login, password);
    const events = await appendedBy(PLATFORM_TENANT, () =>
      assert.rejects(accounts.login({ login, password, previousSessionToken: undefined }, testClient()), {
        code: 'login_failed',
      }),
    );
    assert.deepEqual(summary(events), [
      {
        actor: 'anonymous',
        action: 'session.login_failed',
        target: null,
        data: { account_key: accountKey(login) },
      },
    ]);
  });

  test("AUD-1: logout, revoking one session and signing out everywhere (with the count) are recorded by the session's user", async () => {
    const user = await account();
    const tenant = user.user.tenant_id;
    const [second, third, fourth] = [
      await loginAgain(ctx.db, ctx.testApp, user),
      await loginAgain(ctx.db, ctx.testApp, user),
      await loginAgain(ctx.db, ctx.testApp, user),
    ];
    secrets.push(second.sessionToken, third.sessionToken, fourth.sessionToken);
    const actor = `user:${user.user.id}`;

    const revoked = await appendedBy(tenant, () => accounts.revokeSession(user.principal, second.sessionId));
    assert.deepEqual(summary(revoked), [
      {
        actor,
        action: 'session.revoked',
        target: `session:${second.sessionId}`,
        data: { session_id: second.sessionId, current: false },
      },
    ]);
    // Revoking what is not live revokes nothing and records nothing.
    assert.deepEqual(
      await appendedBy(tenant, () => accounts.revokeSession(user.principal, second.sessionId)),
      [],
    );

    const loggedOut = await appendedBy(tenant, () =>
      accounts.logout(sessionPrincipal(user, third.sessionId)),
    );
    assert.deepEqual(summary(loggedOut), [
      {
        actor,
        action: 'session.logout',
        target: `session:${third.sessionId}`,
        data: { session_id: third.sessionId },
      },
    ]);

    // Left: the account's first session and the fourth.
    const everywhere = await appendedBy(tenant, () => accounts.signOutEverywhere(user.principal));
    assert.deepEqual(summary(everywhere), [
      {
        actor,
        action: 'session.revoked_all',
        target: `user:${user.user.id}`,
        data: { user_id: user.user.id, count: 2 },
      },
    ]);
  });

  test('AUD-1: a password change appends account.password_changed with the number of other sessions ended; a wrong current password appends nothing', async () => {
    const user = await account();
    const other = await loginAgain(ctx.db, ctx.testApp, user);
    secrets.push(other.sessionToken);
    const next = `next-${randomUUID()}`;
    secrets.push(next);
    assert.deepEqual(
      await appendedBy(user.user.tenant_id, () =>
        assert.rejects(accounts.changePassword(user.principal, { current: `not-${user.password}`, next })),
      ),
      [],
    );
    const changed = await appendedBy(user.user.tenant_id, () =>
      accounts.changePassword(user.principal, { current: user.password, next }),
    );
    assert.deepEqual(summary(changed), [
      {
        actor: `user:${user.user.id}`,
        action: 'account.password_changed',
        target: `user:${user.user.id}`,
        data: { user_id: user.user.id, sessions_revoked: 1 },
      },
    ]);
  });
});

describe('API tokens', () => {
  test('AUD-1: minting and revoking a token record token.minted {token_id, name, scope, last4, expires_at} and token.revoked; through a token the actor is token:<id>', async () => {
    const user = await account();
    const tenant = user.user.tenant_id;
    let minted = { id: '', token: '', last4: '' };
    const mintedEvents = await appendedBy(tenant, async () => {
      const response = await ctx.testApp.app.inject({
        method: 'POST',
        url: '/api/v1/tokens',
        headers: { authorization: `Bearer ${user.apiToken}`, 'content-type': 'application/json' },
        payload: JSON.stringify({
          name: 'deploy bot',
          scope: 'read',
          expires_at: '2099-01-01T00:00:00.000Z',
        }),
      });
      assert.equal(response.statusCode, 201, response.body);
      minted = response.json<{ id: string; token: string; last4: string }>();
      secrets.push(minted.token);
    });
    assert.deepEqual(summary(mintedEvents), [
      {
        actor: `token:${user.apiTokenId}`,
        action: 'token.minted',
        target: `token:${minted.id}`,
        data: {
          token_id: minted.id,
          name: 'deploy bot',
          scope: 'read',
          last4: minted.last4,
          expires_at: '2099-01-01T00:00:00.000Z',
        },
      },
    ]);

    const revokedEvents = await appendedBy(tenant, async () => {
      const response = await ctx.testApp.app.inject({
        method: 'DELETE',
        url: `/api/v1/tokens/${minted.id}`,
        headers: { cookie: user.sessionCookie, origin: 'http://127.0.0.1:3000' },
      });
      assert.equal(response.statusCode, 204, response.body);
    });
    assert.deepEqual(summary(revokedEvents), [
      {
        actor: `user:${user.user.id}`,
        action: 'token.revoked',
        target: `token:${minted.id}`,
        data: { token_id: minted.id },
      },
    ]);
  });
});

describe('one-time links', () => {
  test('AUD-1: an email change appends account.email_change_requested by the user, and its link account.email_verified (actor anonymous)', async () => {
    const user = await account();
    const tenant = user.user.tenant_id;
    const requested = await appendedBy(tenant, () =>
      links.requestEmailChange(user.principal, {
        email: `${uniqueName('moved')}@example.test`,
        currentPassword: user.password,
      }),
    );
    const linkId = String(requested[0]?.data.link_id);
    assert.deepEqual(summary(requested), [
      {
        actor: `user:${user.user.id}`,
        action: 'account.email_change_requested',
        target: `user:${user.user.id}`,
        data: { user_id: user.user.id, link_id: linkId },
      },
    ]);
    const link = await mintLinkForMail(ctx.db.app, 'verify_email', { tenantId: tenant, tokenId: linkId });
    assert.ok(link !== undefined);
    secrets.push(link.token);
    const verified = await appendedBy(tenant, () => links.verifyEmail(link.token, testClient()));
    assert.deepEqual(summary(verified), [
      {
        actor: 'anonymous',
        action: 'account.email_verified',
        target: `user:${user.user.id}`,
        data: { user_id: user.user.id, link_id: linkId },
      },
    ]);
  });

  test("AUD-1: a recovery request appends account.recovery_requested — matched: to the user's tenant; unmatched: to the platform's with only the reference — and using the link account.recovery_completed", async () => {
    const user = await account();
    const tenant = user.user.tenant_id;
    const unknownLogin = uniqueName('nobody');
    let unmatchedReference = '';
    const unmatched = await appendedBy(PLATFORM_TENANT, async () => {
      ({ reference: unmatchedReference } = await links.requestRecovery(
        { login: unknownLogin, email: `${unknownLogin}@example.test` },
        testClient(),
      ));
    });
    assert.deepEqual(summary(unmatched), [
      {
        actor: 'anonymous',
        action: 'account.recovery_requested',
        target: null,
        data: { reference: unmatchedReference },
      },
    ]);

    let reference = '';
    const matched = await appendedBy(tenant, async () => {
      ({ reference } = await links.requestRecovery(
        { login: user.user.username, email: user.user.email },
        testClient(),
      ));
    });
    const linkId = String(matched[0]?.data.link_id);
    assert.deepEqual(summary(matched), [
      {
        actor: 'anonymous',
        action: 'account.recovery_requested',
        target: `user:${user.user.id}`,
        data: { reference, user_id: user.user.id, link_id: linkId },
      },
    ]);
    const link = await mintLinkForMail(ctx.db.app, 'recover', { tenantId: tenant, tokenId: linkId });
    assert.ok(link !== undefined);
    secrets.push(link.token);
    const newPassword = `reset-${randomUUID()}`;
    secrets.push(newPassword);
    const completed = await appendedBy(tenant, () =>
      links.resetPassword(link.token, newPassword, testClient()),
    );
    assert.deepEqual(summary(completed), [
      {
        actor: 'anonymous',
        action: 'account.recovery_completed',
        target: `user:${user.user.id}`,
        data: { user_id: user.user.id, link_id: linkId, sessions_revoked: 1 },
      },
    ]);
  });
});

describe('rollback', () => {
  test('AUD-1: an action whose transaction fails after its event was appended leaves no event, and the chain no gap', async () => {
    const user = await account();
    const tenant = user.user.tenant_id;
    // Planted by the superuser: the new session row or token row is refused at COMMIT, after every statement of
    // the action — the event's append included — has run.
    await ctx.db.superuser.unsafe(`
      create function enclave.test_fail_at_commit() returns trigger language plpgsql as $$
      begin raise exception 'refused at commit (test)'; end $$;
      create constraint trigger test_fail_session after insert on enclave.sessions
        deferrable initially deferred for each row when (new.user_agent = 'fail-at-commit')
        execute function enclave.test_fail_at_commit();
      create constraint trigger test_fail_token after insert on enclave.api_tokens
        deferrable initially deferred for each row when (new.name = 'fail at commit')
        execute function enclave.test_fail_at_commit();`);
    try {
      const before = await chain(tenant);
      await assert.rejects(
        accounts.login(
          { login: user.user.username, password: user.password, previousSessionToken: undefined },
          { ip: testClient().ip, userAgent: 'fail-at-commit' },
        ),
        /refused at commit/,
      );
      await assert.rejects(
        accounts.mintApiToken(user.principal, { name: 'fail at commit', scope: 'read', expiresAt: null }),
        /refused at commit/,
      );
      assert.deepEqual(await chain(tenant), before, 'the rolled-back actions left events');
      const [live] = await ctx.db.superuser<{ n: number }[]>`
        select (select count(*) from enclave.sessions where user_agent = 'fail-at-commit')
             + (select count(*) from enclave.api_tokens where name = 'fail at commit') as n`;
      assert.equal(Number(live?.n), 0);
      // The next action takes the very next seq.
      const next = await appendedBy(tenant, () => loginAgain(ctx.db, ctx.testApp, user));
      assert.deepEqual(
        next.map((event) => [event.seq, event.action]),
        [[(before.at(-1)?.seq ?? 0) + 1, 'session.login']],
      );
    } finally {
      await ctx.db.superuser.unsafe(`
        drop trigger test_fail_session on enclave.sessions;
        drop trigger test_fail_token on enclave.api_tokens;
        drop function enclave.test_fail_at_commit();`);
    }
  });
});

describe('event data', () => {
  test('AUD-1: no stored event carries a password, session token, API token, invite token or link token used in this file', async () => {
    assert.ok(secrets.length > 20, `secrets collected: ${secrets.length}`);
    const rows = await ctx.db.superuser<{ canonical: string }[]>`select canonical from enclave.audit_events`;
    assert.ok(rows.length > 30);
    const text = rows.map((row) => row.canonical).join('\n');
    const leaked = secrets.filter((secret) => text.includes(secret));
    assert.deepEqual(leaked, [], 'secrets found in the audit log');
    // Nor their JSON-escaped forms (a secret with a quote or backslash would be escaped in the canonical text).
    assert.deepEqual(
      secrets.filter((secret) => text.includes(JSON.stringify(secret).slice(1, -1))),
      [],
    );
  });
});
