import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { before, describe, test } from 'node:test';
import {
  createAccount,
  createdAccount,
  mailedInviteToken,
  mintInvite,
  type TestAccount,
  testAccountsService,
  testClient,
  uniqueName,
} from '../../test/helpers/accounts.ts';
import { useTestApp } from '../../test/helpers/app.ts';
import { PASSWORD } from '../../test/helpers/pages.ts';
import { PLATFORM_TENANT } from '../audit/append.ts';
import { withTenant } from '../db/tenant.ts';
import { bootstrapOperatorInvite, OPERATOR_INVITE_HOURS } from './invites.ts';
import type { AccountsService } from './service.ts';

// Attack: someone without a valid invite gets an account — by replaying a
// used invite (or racing two signups on one), redeeming an invite addressed
// to someone else, using an expired or revoked one, reading invite tokens out
// of the database, or minting the first operator's invite again later.

const ctx = useTestApp();
let accounts: AccountsService;

ctx.before(async () => {
  accounts = testAccountsService(ctx.db, ctx.testApp);
});

async function userCount(where: { email?: string; username?: string } = {}): Promise<number> {
  const [row] = await ctx.db.superuser<{ n: number }[]>`
    select count(*)::int as n from users
    where (${where.email ?? null}::text is null or email = ${where.email ?? null})
      and (${where.username ?? null}::text is null or username = ${where.username ?? null})`;
  return row?.n ?? 0;
}

async function signup(invite: string, email: string, username = uniqueName()) {
  return createdAccount(await accounts.signup({ invite, email, username, password: PASSWORD }, testClient()));
}

async function inviteState(id: string): Promise<{ used_at: Date | null; revoked_at: Date | null }> {
  const [row] = await ctx.db.superuser<{ used_at: Date | null; revoked_at: Date | null }[]>`
    select used_at, revoked_at from invites where id = ${id}::uuid`;
  assert.ok(row !== undefined);
  return row;
}

function isCode(code: string, field?: string) {
  return (error: unknown): boolean => {
    const err = error as { code?: string; field?: string };
    assert.equal(err.code, code, String(error));
    if (field !== undefined) assert.equal(err.field, field);
    return true;
  };
}

describe('single use', () => {
  test('ACC-1: an invite creates exactly one account; using it again is refused', async () => {
    const email = `${uniqueName()}@example.test`;
    const invite = await mintInvite(ctx.db, { kind: 'tenant', email });
    const { user } = await signup(invite.token, email);
    assert.equal(user.email, email);
    assert.equal(user.role, 'owner');
    assert.ok((await inviteState(invite.id)).used_at !== null);
    await assert.rejects(signup(invite.token, email), isCode('invite_invalid', 'invite'));
    assert.equal(await userCount({ email }), 1);
  });

  test('ACC-1: two signups racing on one invite create exactly one user', async () => {
    // The first operator's invite is bound to no address, so only the
    // single-use check (not the unique email) can stop the second signup.
    const invite = await mintInvite(ctx.db, { kind: 'operator', email: null });
    const names = [uniqueName('racer'), uniqueName('racer')];
    const results = await Promise.allSettled(
      names.map((username) => signup(invite.token, `${username}@example.test`, username)),
    );
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r) => r.status === 'rejected');
    assert.equal(won.length, 1, JSON.stringify(results.map((r) => r.status)));
    assert.equal(lost.length, 1);
    isCode('invite_invalid')((lost[0] as PromiseRejectedResult).reason);
    const [one = '', two = ''] = names;
    const created = (await userCount({ username: one })) + (await userCount({ username: two }));
    assert.equal(created, 1);
    // The loser's tenant was rolled back with its user.
    const [tenants] = await ctx.db.superuser<{ n: number }[]>`
      select count(*)::int as n from tenants where name = any(${names}::text[])`;
    assert.equal(tenants?.n, 1);
  });

  test('ACC-1: two signups racing on one bound invite create exactly one user', async () => {
    const email = `${uniqueName()}@example.test`;
    const invite = await mintInvite(ctx.db, { kind: 'tenant', email });
    const results = await Promise.allSettled([signup(invite.token, email), signup(invite.token, email)]);
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    assert.equal(await userCount({ email }), 1);
  });

  test('ACC-1: a failed signup (taken username) gives the invite back', async () => {
    const taken = await createAccount(ctx.db, ctx.testApp);
    const email = `${uniqueName()}@example.test`;
    const invite = await mintInvite(ctx.db, { kind: 'tenant', email });
    await assert.rejects(
      signup(invite.token, email, taken.user.username),
      isCode('validation_failed', 'username'),
    );
    assert.equal((await inviteState(invite.id)).used_at, null);
    await signup(invite.token, email);
    assert.equal(await userCount({ email }), 1);
  });
});

describe('bound to one address', () => {
  test('ACC-1: signing up with another address than the invite names is refused, and the invite stays unused', async () => {
    const email = `${uniqueName()}@example.test`;
    const invite = await mintInvite(ctx.db, { kind: 'tenant', email });
    for (const other of ['someone.else@example.test', `${email}.evil.example`, `x${email}`]) {
      await assert.rejects(signup(invite.token, other), isCode('validation_failed', 'email'));
    }
    assert.equal((await inviteState(invite.id)).used_at, null);
    assert.equal(await userCount({ email: 'someone.else@example.test' }), 0);
  });

  test('ACC-1: the address matches case-insensitively', async () => {
    const local = uniqueName();
    const invite = await mintInvite(ctx.db, { kind: 'tenant', email: `${local}@example.test` });
    const { user } = await signup(invite.token, `  ${local.toUpperCase()}@Example.TEST `);
    assert.equal(user.email, `${local}@example.test`);
  });
});

describe('expired, revoked, unknown', () => {
  test('ACC-1: an expired invite is refused', async () => {
    const email = `${uniqueName()}@example.test`;
    const invite = await mintInvite(ctx.db, {
      kind: 'tenant',
      email,
      expiresAt: new Date(Date.now() + 3600_000),
    });
    await ctx.db
      .superuser`update invites set expires_at = now() - interval '1 second' where id = ${invite.id}::uuid`;
    await assert.rejects(accounts.inspectInvite(invite.token), isCode('invite_invalid'));
    await assert.rejects(signup(invite.token, email), isCode('invite_invalid', 'invite'));
    assert.equal(await userCount({ email }), 0);
  });

  test('ACC-1: a revoked invite is refused', async () => {
    const email = `${uniqueName()}@example.test`;
    const invite = await mintInvite(ctx.db, { kind: 'tenant', email });
    await ctx.db.superuser`update invites set revoked_at = now() where id = ${invite.id}::uuid`;
    await assert.rejects(signup(invite.token, email), isCode('invite_invalid', 'invite'));
    assert.equal(await userCount({ email }), 0);
  });

  test('ACC-1: a missing, malformed or unknown invite token is refused', async () => {
    const email = `${uniqueName()}@example.test`;
    const real = await mintInvite(ctx.db, { kind: 'tenant', email });
    for (const token of [
      '',
      'enc_inv_',
      `${real.token}x`,
      real.token.toLowerCase(),
      real.token.slice(0, -1),
    ]) {
      await assert.rejects(signup(token, email), isCode('invite_invalid'));
    }
    assert.equal((await inviteState(real.id)).used_at, null);
  });
});

describe('stored as a hash', () => {
  test('ACC-1: only SHA-256 of the invite token is stored; the token is in no column', async () => {
    const invite = await mintInvite(ctx.db, { kind: 'tenant', email: `${uniqueName()}@example.test` });
    const [row] = await ctx.db.superuser<{ token_hash: string; dump: string }[]>`
      select token_hash, row_to_json(i)::text as dump from invites i where id = ${invite.id}::uuid`;
    assert.equal(row?.token_hash, createHash('sha256').update(invite.token).digest('hex'));
    assert.ok(!row?.dump.includes(invite.token));
    assert.ok(!row?.dump.includes(invite.token.slice('enc_inv_'.length)));
    const [anywhere] = await ctx.db.superuser<{ n: number }[]>`
      select count(*)::int as n from invites i where row_to_json(i)::text like ${`%${invite.token.slice(8)}%`}`;
    assert.equal(anywhere?.n, 0);
  });
});

describe('revoking through the API', () => {
  let operator: TestAccount;
  let owner: TestAccount;
  let member: TestAccount;

  before(async () => {
    operator = await createAccount(ctx.db, ctx.testApp, { kind: 'operator' });
    owner = await createAccount(ctx.db, ctx.testApp);
    member = await createAccount(ctx.db, ctx.testApp, { kind: 'member', tenantOf: owner });
  });

  function revoke(account: TestAccount, id: string) {
    return ctx.testApp.app.inject({
      method: 'DELETE',
      url: `/api/v1/invites/${id}`,
      headers: { authorization: `Bearer ${account.apiToken}` },
    });
  }

  test('ACC-1: a tenant owner revokes a member invite of the tenant, which is then refused', async () => {
    const email = `${uniqueName()}@example.test`;
    const invite = await mintInvite(ctx.db, { kind: 'member', email, tenantId: owner.user.tenant_id });
    const response = await revoke(owner, invite.id);
    assert.equal(response.statusCode, 204, response.body);
    assert.ok((await inviteState(invite.id)).revoked_at !== null);
    await assert.rejects(signup(invite.token, email), isCode('invite_invalid'));
    // Revoking it again: there is no pending invite by that id.
    assert.equal((await revoke(owner, invite.id)).statusCode, 404);
  });

  test('ACC-1: an operator revokes a signup (tenant) invite', async () => {
    const email = `${uniqueName()}@example.test`;
    const invite = await mintInvite(ctx.db, { kind: 'tenant', email });
    assert.equal((await revoke(operator, invite.id)).statusCode, 204);
    await assert.rejects(signup(invite.token, email), isCode('invite_invalid'));
  });

  test('ACC-1: a member cannot revoke invites, and an owner cannot revoke signup invites (404, nothing changes)', async () => {
    const memberInvite = await mintInvite(ctx.db, {
      kind: 'member',
      email: `${uniqueName()}@example.test`,
      tenantId: owner.user.tenant_id,
    });
    const tenantInvite = await mintInvite(ctx.db, { kind: 'tenant', email: `${uniqueName()}@example.test` });
    for (const [account, invite] of [
      [member, memberInvite],
      [member, tenantInvite],
      [owner, tenantInvite],
    ] as const) {
      const response = await revoke(account, invite.id);
      assert.ok([403, 404].includes(response.statusCode), `${response.statusCode}`);
      assert.equal((await inviteState(invite.id)).revoked_at, null);
    }
  });

  test('ACC-1: a used invite cannot be revoked (404)', async () => {
    const email = `${uniqueName()}@example.test`;
    const invite = await mintInvite(ctx.db, { kind: 'tenant', email });
    await signup(invite.token, email);
    assert.equal((await revoke(operator, invite.id)).statusCode, 404);
    assert.equal((await revoke(operator, randomUUID())).statusCode, 404);
  });

  test('ACC-1: member invites created through the API are bound, expire, are mailed (the link is in no response) and are listed without their token', async () => {
    const email = `${uniqueName()}@example.test`;
    const response = await ctx.testApp.app.inject({
      method: 'POST',
      url: '/api/v1/invites',
      headers: { authorization: `Bearer ${owner.apiToken}`, 'content-type': 'application/json' },
      payload: JSON.stringify({ email: email.toUpperCase() }),
    });
    assert.equal(response.statusCode, 201, response.body);
    assert.equal(response.headers['cache-control'], 'no-store');
    const created = response.json<{
      id: string;
      link?: string;
      email: string;
      kind: string;
      expires_at: string;
    }>();
    assert.equal(created.email, email);
    assert.equal(created.kind, 'member');
    assert.equal(created.link, undefined, 'a member invite is mailed, never shown');
    const token = await mailedInviteToken(ctx.db, { id: created.id, tenant_id: owner.user.tenant_id });
    assert.match(token, /^enc_inv_/);
    const days = (new Date(created.expires_at).getTime() - Date.now()) / 86400_000;
    assert.ok(days > 6.9 && days <= 7, `expires in 7 days, got ${days}`);
    const list = await ctx.testApp.app.inject({
      method: 'GET',
      url: '/api/v1/invites',
      headers: { authorization: `Bearer ${owner.apiToken}` },
    });
    assert.ok(list.json<{ invites: { id: string }[] }>().invites.some((i) => i.id === created.id));
    assert.ok(!list.body.includes(token));
    // A member cannot issue invites; an owner cannot issue signup (tenant) invites.
    for (const [account, body] of [
      [member, { email: `${uniqueName()}@example.test` }],
      [owner, { email: `${uniqueName()}@example.test`, kind: 'tenant' }],
    ] as const) {
      const refused = await ctx.testApp.app.inject({
        method: 'POST',
        url: '/api/v1/invites',
        headers: { authorization: `Bearer ${account.apiToken}`, 'content-type': 'application/json' },
        payload: JSON.stringify(body),
      });
      assert.equal(refused.statusCode, 403, refused.body);
    }
  });
});

describe('the first operator', () => {
  // A database of its own: once anyone signs up as operator, bootstrap stops minting.
  const fresh = useTestApp();

  async function operatorInvites() {
    return fresh.db.superuser<
      { id: string; email: string | null; revoked_at: Date | null; used_at: Date | null }[]
    >`
      select id, email, revoked_at, used_at from invites where kind = 'operator' order by created_at`;
  }

  test('ACC-1: bootstrap mints one 24-hour operator invite, bound to ENCLAVE_OPERATOR_EMAIL when given', async () => {
    const first = await bootstrapOperatorInvite(fresh.db.app, 'root@example.test');
    assert.ok(first !== undefined);
    assert.equal(first.invite.kind, 'operator');
    assert.equal(first.invite.email, 'root@example.test');
    assert.equal(first.invite.state, 'pending');
    const hours = (first.invite.expires_at.getTime() - first.invite.created_at.getTime()) / 3600_000;
    assert.ok(Math.abs(hours - OPERATOR_INVITE_HOURS) < 1 / 60, `expires after 24 hours, got ${hours}`);
    const freshAccounts = testAccountsService(fresh.db, fresh.testApp);
    await assert.rejects(
      freshAccounts.signup(
        { invite: first.token, email: 'intruder@example.test', username: 'intruder', password: PASSWORD },
        testClient(),
      ),
      isCode('validation_failed', 'email'),
    );
  });

  test('ACC-1: a second bootstrap revokes the earlier unused invite, whose token no longer works', async () => {
    const earlier = await bootstrapOperatorInvite(fresh.db.app, undefined);
    const later = await bootstrapOperatorInvite(fresh.db.app, undefined);
    assert.ok(earlier !== undefined && later !== undefined);
    assert.equal(later.invite.email, null, 'with no ENCLAVE_OPERATOR_EMAIL it is bound to no address');
    const invites = await operatorInvites();
    const pending = invites.filter((i) => i.revoked_at === null && i.used_at === null);
    assert.deepEqual(
      pending.map((i) => i.id),
      [later.invite.id],
      'exactly one pending operator invite',
    );
    const freshAccounts = testAccountsService(fresh.db, fresh.testApp);
    await assert.rejects(
      freshAccounts.signup(
        { invite: earlier.token, email: 'early@example.test', username: 'early', password: PASSWORD },
        testClient(),
      ),
      isCode('invite_invalid'),
    );
  });

  test('ACC-1: once the first operator has signed up, bootstrap mints nothing', async () => {
    const last = await bootstrapOperatorInvite(fresh.db.app, undefined);
    assert.ok(last !== undefined);
    const freshAccounts = testAccountsService(fresh.db, fresh.testApp);
    const { user } = createdAccount(
      await freshAccounts.signup(
        { invite: last.token, email: 'root@example.test', username: 'root', password: PASSWORD },
        testClient(),
      ),
    );
    assert.equal(user.is_operator, true);
    assert.equal(user.email_verified, false, 'the console showed the link: it proves no address');
    assert.equal(user.role, 'owner');
    const before = (await operatorInvites()).length;
    assert.equal(await bootstrapOperatorInvite(fresh.db.app, undefined), undefined);
    assert.equal(await bootstrapOperatorInvite(fresh.db.app, 'other@example.test'), undefined);
    assert.equal((await operatorInvites()).length, before);
  });
});

describe('under row-level security', () => {
  test('TEN-1: a member invite is seen and changed only bound to its tenant, a signup invite only bound to the platform; unbound, the app role sees none', async () => {
    const [alice, bob] = [await createAccount(ctx.db, ctx.testApp), await createAccount(ctx.db, ctx.testApp)];
    const member = await mintInvite(ctx.db, {
      kind: 'member',
      email: `${uniqueName()}@example.test`,
      tenantId: alice.user.tenant_id,
    });
    const signupInvite = await mintInvite(ctx.db, { kind: 'tenant', email: `${uniqueName()}@example.test` });
    const ids = [member.id, signupInvite.id];
    const seenBy = (tenantId: string) =>
      withTenant(ctx.db.app, tenantId, async (tx) =>
        (await tx<{ id: string }[]>`select id from invites where id = any(${ids}::uuid[])`).map((r) => r.id),
      );
    assert.deepEqual(await seenBy(alice.user.tenant_id), [member.id]);
    assert.deepEqual(await seenBy(bob.user.tenant_id), []);
    assert.deepEqual(await seenBy(PLATFORM_TENANT), [signupInvite.id]);
    const [unbound] = await ctx.db.app<{ n: number }[]>`select count(*)::int as n from invites`;
    assert.equal(unbound?.n, 0);

    const revokedByBob = await withTenant(
      ctx.db.app,
      bob.user.tenant_id,
      (tx) => tx`update invites set revoked_at = now() where id = any(${ids}::uuid[])`,
    );
    assert.equal(revokedByBob.count, 0);
    assert.equal((await inviteState(member.id)).revoked_at, null);
    await assert.rejects(
      withTenant(
        ctx.db.app,
        bob.user.tenant_id,
        (tx) => tx`
          insert into invites (kind, tenant_id, email, token_hash, expires_at)
          values ('member', ${alice.user.tenant_id}::uuid, 'planted@example.test', ${'a'.repeat(64)}, now() + interval '1 day')`,
      ),
      /row-level security/,
    );
  });

  test('TEN-1, TEN-6: an invite is used only through enclave.invite_redeem: SECURITY DEFINER, owned by enclave_owner, search_path pinned, executable by enclave_app and not PUBLIC, returning only what signup needs', async () => {
    const [fn] = await ctx.db.superuser<
      {
        definer: boolean;
        owner: string;
        config: string[] | null;
        app: boolean;
        public: boolean;
        columns: string;
      }[]
    >`
      select p.prosecdef as definer, pg_get_userbyid(p.proowner) as owner, p.proconfig as config,
             has_function_privilege('enclave_app', p.oid, 'execute') as app,
             exists (select 1 from aclexplode(p.proacl) a where a.grantee = 0) as public,
             pg_get_function_result(p.oid) as columns
      from pg_proc p where p.oid = 'enclave.invite_redeem(text, uuid)'::regprocedure`;
    assert.ok(fn !== undefined);
    assert.equal(fn.definer, true);
    assert.equal(fn.owner, 'enclave_owner');
    assert.deepEqual(fn.config, ['search_path=enclave, pg_temp']);
    assert.equal(fn.app, true);
    assert.equal(fn.public, false);
    assert.equal(
      fn.columns,
      'TABLE(invite_id uuid, invite_kind text, invite_tenant_id uuid, invite_email text, mailed boolean)',
    );

    // Bound to the tenant it creates, signup still uses a platform invite, and the caller's binding survives.
    const email = `${uniqueName()}@example.test`;
    const invite = await mintInvite(ctx.db, { kind: 'tenant', email });
    const { user } = await signup(invite.token, email);
    assert.equal((await inviteState(invite.id)).used_at !== null, true);
    const [usedBy] = await ctx.db.superuser<{ used_by: string }[]>`
      select used_by from invites where id = ${invite.id}::uuid`;
    assert.equal(usedBy?.used_by, user.id);
  });
});
