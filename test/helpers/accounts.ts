import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import type {} from '@fastify/cookie';
import type { TokenScope } from '../../src/accounts/api-tokens.ts';
import { createDeviceCookies } from '../../src/accounts/device-cookies.ts';
import {
  type Invite,
  type InviteKind,
  insertInvite,
  inviteChain,
  markInviteMailed,
  mintInviteForMail,
} from '../../src/accounts/invites.ts';
import {
  type AccountsService,
  type ClientInfo,
  createAccountsService,
  type LoginOutcome,
  type Principal,
  type SignupOutcome,
} from '../../src/accounts/service.ts';
import { type NewSession, SESSION_COOKIE } from '../../src/accounts/sessions.ts';
import type { User } from '../../src/accounts/users.ts';
import { withTenant } from '../../src/db/tenant.ts';
import type { App } from '../../src/http/app.ts';
import type { TestApp } from './app.ts';
import type { TestDatabase } from './database.ts';

// Real accounts made through the real code path: an invite minted with
// insertInvite, redeemed by the accounts service's signup, then a session
// cookie signed by the app under test and an API token minted by the service.

export interface TestAccount {
  readonly user: User;
  readonly password: string;
  /** The client address the account signed up from (unique per account, so rate limits do not collide). */
  readonly client: ClientInfo;
  readonly sessionId: string;
  /** The raw session token (what the cookie signs). */
  readonly sessionToken: string;
  /** A ready `Cookie` header value: `enclave_session=<signed token>`, signed by the app it was made with. */
  readonly sessionCookie: string;
  readonly apiToken: string;
  readonly apiTokenId: string;
  /** The principal the session stands for, to call the service directly. */
  readonly principal: Principal;
}

export interface AccountOptions {
  /** 'tenant' (default): a new tenant owned by the user; 'operator': the same, as operator; 'member': joins `tenantOf`'s tenant. */
  readonly kind?: InviteKind;
  readonly tenantOf?: TestAccount;
  readonly username?: string;
  readonly email?: string;
  readonly password?: string;
  readonly tokenScope?: TokenScope;
  /** False: the invite was shown to its maker, not mailed, so the address stays unverified (default true). */
  readonly mailedInvite?: boolean;
}

/** A random 10.x.y.z address: each call is its own client for the per-IP buckets. */
export function randomClientIp(): string {
  return `10.${randomInt(256)}.${randomInt(256)}.${randomInt(1, 255)}`;
}

export function testClient(): ClientInfo {
  return { ip: randomClientIp(), userAgent: 'enclave-tests' };
}

/** `enclave_session=<token signed with app's session key>`, as a browser would send it back. */
export function sessionCookieFor(app: App, sessionToken: string): string {
  return `${SESSION_COOKIE}=${encodeURIComponent(app.signCookie(sessionToken))}`;
}

export function testAccountsService(
  db: TestDatabase,
  testApp: Pick<TestApp, 'app' | 'rateLimits' | 'sessionKey'>,
): AccountsService {
  return createAccountsService({
    sql: db.app,
    rateLimits: testApp.rateLimits,
    deviceCookies: createDeviceCookies(testApp.sessionKey),
    passwords: testApp.app.passwords,
  });
}

export interface TestInvite {
  readonly kind: InviteKind;
  readonly email: string | null;
  readonly tenantId?: string | null;
  readonly expiresAt?: Date;
  /**
   * Marks an invite with an address as mailed to it, standing in for the
   * send_invite_email job, so signing up with it verifies the address as a
   * mailed invite does (default true). False: an invite shown to its maker.
   */
  readonly mailed?: boolean;
}

/** A pending invite straight from insertInvite, bound to its chain as the service does; `expiresAt` defaults to a week ahead. */
export async function mintInvite(
  db: TestDatabase,
  invite: TestInvite,
): Promise<{ id: string; token: string }> {
  const tenantId = invite.tenantId ?? null;
  return withTenant(db.app, inviteChain({ tenant_id: tenantId }), async (tx) => {
    const created = await insertInvite(tx, {
      kind: invite.kind,
      email: invite.email,
      tenantId,
      createdBy: null,
      expiresAt: invite.expiresAt ?? new Date(Date.now() + 7 * 86400_000),
    });
    if (invite.email !== null && invite.mailed !== false) {
      await tx`update invites set mailed_at = now() where id = ${created.invite.id}::uuid`;
    }
    return { id: created.invite.id, token: created.token };
  });
}

/**
 * Does what the send_invite_email job does for a member invite, without the
 * mailer: mints its token and records it mailed. Returns the token the mail
 * would carry.
 */
export async function mailedInviteToken(
  db: TestDatabase,
  invite: Pick<Invite, 'id' | 'tenant_id'>,
): Promise<string> {
  const payload = { tenantId: invite.tenant_id, inviteId: invite.id };
  const minted = await mintInviteForMail(db.app, payload);
  if (minted === undefined) throw new Error(`invite ${invite.id} is not pending: nothing to mail`);
  await markInviteMailed(db.app, payload);
  return minted.token;
}

/** The account a signup made; throws if it ended otherwise (the address already had one). */
export function createdAccount(signedUp: SignupOutcome): { user: User; session: NewSession } {
  if (signedUp.outcome !== 'created') throw new Error(`signup made no account: ${signedUp.outcome}`);
  return signedUp;
}

export function uniqueName(prefix = 'user'): string {
  return `${prefix}_${randomBytes(5).toString('hex')}`;
}

export async function createAccount(
  db: TestDatabase,
  testApp: Pick<TestApp, 'app' | 'rateLimits' | 'sessionKey'>,
  options: AccountOptions = {},
): Promise<TestAccount> {
  const kind = options.kind ?? 'tenant';
  if (kind === 'member' && options.tenantOf === undefined) throw new Error('a member account needs tenantOf');
  const username = options.username ?? uniqueName();
  const email = options.email ?? `${username}@example.test`;
  const password = options.password ?? `pw-${randomBytes(12).toString('base64url')}`;
  const client = testClient();
  const accounts = testAccountsService(db, testApp);
  const invite = await mintInvite(db, {
    kind,
    email,
    tenantId: kind === 'member' ? (options.tenantOf?.user.tenant_id ?? null) : null,
    mailed: options.mailedInvite ?? true,
  });
  const { user, session } = createdAccount(
    await accounts.signup({ invite: invite.token, email, username, password }, client),
  );
  const principal: Principal = {
    user,
    via: 'session',
    sessionId: session.id,
    tokenId: undefined,
    scope: 'write',
    authenticatedAt: new Date(),
    secondFactorMissing: false,
  };
  const minted = await accounts.mintApiToken(principal, {
    name: 'test token',
    scope: options.tokenScope ?? 'write',
    expiresAt: null,
  });
  return {
    user,
    password,
    client,
    sessionId: session.id,
    sessionToken: session.token,
    sessionCookie: sessionCookieFor(testApp.app, session.token),
    apiToken: minted.token,
    apiTokenId: minted.listing.id,
    principal,
  };
}

/** A further session for an existing account, through the service's login (as a second browser would get). */
export async function loginAgain(
  db: TestDatabase,
  testApp: Pick<TestApp, 'app' | 'rateLimits' | 'sessionKey'>,
  account: TestAccount,
): Promise<{ sessionId: string; sessionToken: string; sessionCookie: string }> {
  const session = sessionOf(
    await testAccountsService(db, testApp).login(
      { login: account.user.username, password: account.password, previousSessionToken: undefined },
      testClient(),
    ),
  );
  return {
    sessionId: session.id,
    sessionToken: session.token,
    sessionCookie: sessionCookieFor(testApp.app, session.token),
  };
}

/** The session a password sign-in started; fails the test if it asked for a second step instead. */
export function sessionOf(outcome: LoginOutcome): NewSession {
  assert.ok(outcome.session !== undefined, 'the sign-in asked for a second step');
  return outcome.session;
}
