import { randomBytes } from 'node:crypto';
import type { Sql } from 'postgres';
import { findMailedInviteHashes, inviteTokenHash } from '../accounts/invites.ts';
import type { AccountsService, ClientInfo, Principal } from '../accounts/service.ts';
import type { NewSession } from '../accounts/sessions.ts';
import { findUserByVerifiedEmail, getUser, type User } from '../accounts/users.ts';
import { normalizeUsername } from '../accounts/validation.ts';
import { appendAuditEvent, PLATFORM_TENANT } from '../audit/append.ts';
import { withLookup } from '../db/lookup.ts';
import { type TenantSql, withTenant } from '../db/tenant.ts';
import { assertRecentSignIn } from '../signin/recent-sign-in.ts';
import { LAST_WAY_MESSAGE, lockSignInWays } from '../signin/sign-in-ways.ts';
import { IdentityError } from './errors.ts';
import { browserSecret, type FlowPurpose, flowChecks, insertFlow, newState, takeFlow } from './flows.ts';
import {
  deleteIdentity,
  findLinkedIdentity,
  type IdentityListing,
  insertIdentity,
  listIdentities,
  touchIdentity,
} from './identities.ts';
import type { ProviderClient, ProviderIdentity } from './provider-client.ts';
import type { IdentityProvider, IdentityProviders } from './providers.ts';

// ACC-9, ACC-1: signing in through a provider, and linking identities.
//
// An identity resolves to a user in this order, and to nothing else:
//   1. its own link (issuer + subject);
//   2. the one account whose verified address equals the address the
//      provider verified (both sides proven: a provider's unverified email,
//      or an account whose address was never confirmed, links nothing);
//   3. a new account, only by redeeming the invite the flow started from (or,
//      with none, the one pending invite mailed to that verified address),
//      through the accounts service's one account-making path (ACC-1);
// otherwise nothing is created and the person is told an invite is needed.
//
// Audit (AUD-1): identity.linked / identity.unlinked, session.login with the
// method, identity.sign_in_failed / identity.sign_in_refused; data holds ids,
// provider names and reason codes, never a token, code, state or address.

export interface IdentitiesDeps {
  readonly sql: Sql;
  readonly accounts: Pick<AccountsService, 'inspectInvite' | 'signupWithProvider'>;
  readonly providers: IdentityProviders;
  readonly client: ProviderClient;
  readonly publicUrl: string;
}

/**
 * What a callback ended in: a user the identity proved (the caller begins
 * their sign-in, which may ask for a second step), a new account with its
 * session, or an identity linked to the signed-in user.
 */
export type CallbackOutcome =
  | { readonly outcome: 'identified'; readonly user: User; readonly next: string | null }
  | { readonly outcome: 'signed_up'; readonly session: NewSession }
  | { readonly outcome: 'linked'; readonly provider: string }
  | { readonly outcome: 'account_exists' };

export interface StartInput {
  readonly provider: string;
  readonly purpose: FlowPurpose;
  /** For 'link': who asks. */
  readonly principal: Principal | undefined;
  /** For a sign-up: the invite token from /signup?invite=. */
  readonly invite: string | undefined;
  readonly next: string | undefined;
  /** The browser's flow cookie, if it has one. */
  readonly browserCookie: string | undefined;
}

export interface CallbackInput {
  readonly provider: string;
  /** The callback's path and query as received (`/auth/:provider/callback?code=…&state=…`). */
  readonly url: string;
  readonly state: string | undefined;
  readonly browserCookie: string | undefined;
  readonly principal: Principal | undefined;
}

/** A username from the provider's suggestion or the address: lower-cased, the rest replaced, 3 to 26 characters. */
export function usernameBase(identity: Pick<ProviderIdentity, 'username' | 'verifiedEmail'>): string {
  const suggestion = identity.username ?? identity.verifiedEmail?.split('@')[0] ?? '';
  const cleaned = suggestion
    .toLowerCase()
    .replace(/[^a-z0-9_-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 26);
  return normalizeUsername(cleaned) ?? `user-${cleaned}`.slice(0, 26);
}

async function usernameFree(sql: Sql, username: string): Promise<boolean> {
  // The login lookup policy shows the one user of that name, in any tenant.
  const rows = await withLookup(sql, username, (tx) => tx`select 1 from users where username = ${username}`);
  return rows.length === 0;
}

export function createIdentitiesService(deps: IdentitiesDeps) {
  const { sql, accounts, providers, client } = deps;

  function providerNamed(name: string): IdentityProvider {
    const provider = providers.get(name);
    if (provider === undefined) throw new IdentityError('not_found', 'No such sign-in provider.');
    return provider;
  }

  const redirectUri = (provider: IdentityProvider) => `${deps.publicUrl}/auth/${provider.name}/callback`;

  /** A failure is recorded where it happened: the linking user's chain, else the platform's. */
  async function recordFailure(
    action: 'identity.sign_in_failed' | 'identity.sign_in_refused',
    provider: string,
    reason: string,
    principal: Principal | undefined,
  ): Promise<void> {
    const tenantId = principal?.user.tenant_id ?? PLATFORM_TENANT;
    await withTenant(sql, tenantId, (tx) =>
      appendAuditEvent(tx, tenantId, {
        actor: principal === undefined ? 'anonymous' : `user:${principal.user.id}`,
        action,
        target: null,
        data: { provider, reason },
      }),
    );
  }

  async function recordLinked(
    tx: TenantSql,
    user: User,
    identity: { id: string; provider: string; via: 'profile' | 'verified_email' | 'signup' },
  ): Promise<void> {
    await appendAuditEvent(tx, user.tenant_id, {
      actor: identity.via === 'profile' ? `user:${user.id}` : 'anonymous',
      action: 'identity.linked',
      target: `identity:${identity.id}`,
      data: { identity_id: identity.id, user_id: user.id, provider: identity.provider, via: identity.via },
    });
  }

  async function link(
    tx: TenantSql,
    user: User,
    provider: IdentityProvider,
    identity: ProviderIdentity,
    via: 'profile' | 'verified_email' | 'signup',
  ): Promise<string> {
    const id = await insertIdentity(tx, {
      tenantId: user.tenant_id,
      userId: user.id,
      provider: provider.name,
      issuer: identity.issuer,
      subject: identity.subject,
    });
    if (id === undefined) {
      throw new IdentityError(
        'identity_in_use',
        `This ${provider.label} identity is linked to another account, or yours already has a ${provider.label} identity.`,
      );
    }
    await recordLinked(tx, user, { id, provider: provider.name, via });
    return id;
  }

  /** The user a linked or newly linked identity stands for; the link's last use is now. */
  async function identified(user: User, identityId: string): Promise<User> {
    await withTenant(sql, user.tenant_id, (tx) => touchIdentity(tx, identityId));
    return user;
  }

  async function signUp(
    provider: IdentityProvider,
    identity: ProviderIdentity & { verifiedEmail: string },
    inviteHash: string,
    clientInfo: ClientInfo,
  ): Promise<CallbackOutcome> {
    const base = usernameBase(identity);
    let username = base;
    // A taken name gets a short suffix; two tries cover all but a determined race, which the insert refuses.
    for (let attempt = 0; attempt < 3 && !(await usernameFree(sql, username)); attempt += 1) {
      username = `${base}-${randomBytes(3).toString('hex')}`;
    }
    const signedUp = await accounts.signupWithProvider(
      {
        inviteHash,
        email: identity.verifiedEmail,
        username,
        link: (tx, user) => link(tx, user, provider, identity, 'signup'),
      },
      clientInfo,
    );
    if (signedUp.outcome === 'account_exists') return signedUp;
    return { outcome: 'signed_up', session: signedUp.session };
  }

  return {
    /** The configured providers, for buttons: name and label. */
    providerList(): { name: string; label: string }[] {
      return [...providers.values()].map(({ name, label }) => ({ name, label }));
    },

    /**
     * Starts a flow: stores its row and returns where to send the browser,
     * and the browser secret its cookie keeps.
     */
    async start(input: StartInput): Promise<{ url: URL; label: string; browserSecret: string }> {
      const provider = providerNamed(input.provider);
      if (input.purpose === 'link') {
        if (input.principal === undefined) {
          throw new IdentityError('identity_flow_invalid', 'Sign in first to link an identity.');
        }
        // A new way into the account: as with removing one, a found session alone is not enough (ACC-8).
        assertRecentSignIn(input.principal);
      }
      const invite = input.invite === undefined ? undefined : await accounts.inspectInvite(input.invite);
      const secret = browserSecret(input.browserCookie);
      const state = newState();
      const url = await client.authorizationUrl(provider, redirectUri(provider), flowChecks(secret, state));
      await insertFlow(
        sql,
        {
          provider: provider.name,
          purpose: input.purpose,
          linkUserId: input.purpose === 'link' ? (input.principal?.user.id ?? null) : null,
          inviteHash:
            invite === undefined || input.invite === undefined ? null : inviteTokenHash(input.invite),
          nextPath: input.next ?? null,
        },
        secret,
        state,
      );
      return { url, label: provider.label, browserSecret: secret };
    },

    /** ACC-9: the provider's redirect back. Throws IdentityError (or invite_invalid) for every way it can fail. */
    async callback(input: CallbackInput, clientInfo: ClientInfo): Promise<CallbackOutcome> {
      const provider = providerNamed(input.provider);
      const flow =
        input.state === undefined
          ? undefined
          : await takeFlow(sql, provider.name, input.state, input.browserCookie);
      if (flow === undefined || input.state === undefined || input.browserCookie === undefined) {
        await recordFailure('identity.sign_in_failed', provider.name, 'flow_not_found', input.principal);
        throw new IdentityError(
          'identity_flow_invalid',
          'This sign-in was not started in this browser, was already used, or has expired.',
        );
      }
      const linking = flow.purpose === 'link' ? input.principal : undefined;
      if (flow.purpose === 'link' && linking?.user.id !== flow.linkUserId) {
        await recordFailure('identity.sign_in_failed', provider.name, 'link_user_changed', input.principal);
        throw new IdentityError(
          'identity_flow_invalid',
          'Sign in as the account that asked to link, then try again.',
        );
      }
      let identity: ProviderIdentity;
      try {
        identity = await client.identify(
          provider,
          new URL(input.url, deps.publicUrl),
          flowChecks(input.browserCookie, input.state),
        );
      } catch (error) {
        await recordFailure(
          'identity.sign_in_failed',
          provider.name,
          error instanceof IdentityError ? (error.reason ?? error.code) : 'provider_error',
          linking,
        );
        throw error;
      }
      if (linking !== undefined) {
        await withTenant(sql, linking.user.tenant_id, (tx) =>
          link(tx, linking.user, provider, identity, 'profile'),
        );
        return { outcome: 'linked', provider: provider.name };
      }
      const linked = await findLinkedIdentity(sql, identity.issuer, identity.subject);
      if (linked !== undefined) {
        const user = await withTenant(sql, linked.tenant_id, (tx) => getUser(tx, linked.user_id));
        if (user === undefined) throw new Error('a linked identity names no user');
        return { outcome: 'identified', user: await identified(user, linked.id), next: flow.nextPath };
      }
      const { verifiedEmail } = identity;
      if (verifiedEmail === undefined) {
        await recordFailure('identity.sign_in_refused', provider.name, 'email_not_verified', undefined);
        throw new IdentityError(
          'invite_needed',
          `${provider.label} did not confirm your email address, so it cannot be matched to an account or an invite.`,
        );
      }
      const owner = await findUserByVerifiedEmail(sql, verifiedEmail);
      if (owner !== undefined) {
        const id = await withTenant(sql, owner.tenant_id, (tx) =>
          link(tx, owner, provider, identity, 'verified_email'),
        );
        return { outcome: 'identified', user: await identified(owner, id), next: flow.nextPath };
      }
      // The invite the flow started from, else the one invite mailed to this very address.
      const mailed = flow.inviteHash === null ? await findMailedInviteHashes(sql, verifiedEmail) : [];
      const inviteHash = flow.inviteHash ?? (mailed.length === 1 ? mailed[0] : undefined);
      if (inviteHash !== undefined) {
        return signUp(provider, { ...identity, verifiedEmail }, inviteHash, clientInfo);
      }
      await recordFailure(
        'identity.sign_in_refused',
        provider.name,
        mailed.length > 1 ? 'several_invites' : 'no_account',
        undefined,
      );
      throw new IdentityError(
        'invite_needed',
        mailed.length > 1
          ? `Several invites were mailed to your address: open the one you want to accept, and choose ${provider.label} there.`
          : `No account is linked to this ${provider.label} identity or its email address.`,
      );
    },

    async list(principal: Principal): Promise<IdentityListing[]> {
      return withTenant(sql, principal.user.tenant_id, (tx) => listIdentities(tx, principal.user.id));
    },

    /** Unlinks one of the user's identities, never the last way they can sign in; needs a recent sign-in (ACC-8). */
    async unlink(principal: Principal, identityId: string): Promise<void> {
      assertRecentSignIn(principal);
      await withTenant(sql, principal.user.tenant_id, async (tx) => {
        const ways = await lockSignInWays(tx, principal.user.id);
        const provider = await deleteIdentity(tx, principal.user.id, identityId);
        if (provider === undefined) throw new IdentityError('not_found', 'No such linked identity.');
        if (!ways.password && ways.passkeys === 0 && ways.identities <= 1) {
          throw new IdentityError('last_sign_in_method', LAST_WAY_MESSAGE);
        }
        await appendAuditEvent(tx, principal.user.tenant_id, {
          actor: `user:${principal.user.id}`,
          action: 'identity.unlinked',
          target: `identity:${identityId}`,
          data: { identity_id: identityId, user_id: principal.user.id, provider },
        });
      });
    },
  };
}

export type IdentitiesService = ReturnType<typeof createIdentitiesService>;
