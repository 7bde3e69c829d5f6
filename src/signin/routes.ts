import type { Sql } from 'postgres';
import { Type } from 'typebox';
import { recordFor } from '../accounts/audit-events.ts';
import type { ProfileSection } from '../accounts/dashboard-routes.ts';
import { shownError } from '../accounts/page-routes.ts';
import { signedIn } from '../accounts/principal.ts';
import type { Principal } from '../accounts/service.ts';
import { withTenant } from '../db/tenant.ts';
import { unusedRecoveryCodes } from '../factors/recovery-codes.ts';
import type { App } from '../http/app.ts';
import { ProblemSchema } from '../http/problems.ts';
import { Id, NullableTimestamp, Timestamp } from '../http/schemas.ts';
import { listIdentities } from '../identities/identities.ts';
import { messagePage } from '../web/account-pages.ts';
import { bodyText, sendPage } from '../web/forms.ts';
import { secondFactorsSection } from '../web/sign-in-pages.ts';
import { userFactors } from './factors.ts';
import { requiresSecondFactor, setRequireSecondFactor } from './policy.ts';
import { assertRecentSignIn, needsReauth, reauthRedirect } from './recent-sign-in.ts';

// ACC-8: the email code as a second factor (turned on and off from
// /profile), the tenant's rule requiring a second factor (members page
// and /api/v1/tenant/sign-in-policy), and /api/v1/me/sign-in-methods, the
// user's ways to sign in as /profile lists them (ACC-8, ACC-9).

/** The /profile section listing the user's second factors. */
export function secondFactorsProfileSection(sql: Sql): ProfileSection {
  return (principal) =>
    withTenant(sql, principal.user.tenant_id, async (tx) => {
      const [factors, required] = await Promise.all([
        userFactors(tx, principal.user.id),
        requiresSecondFactor(tx, principal.user.tenant_id),
      ]);
      return secondFactorsSection({ factors, emailVerified: principal.user.email_verified, required });
    });
}

const PolicySchema = Type.Object(
  {
    require_second_factor: Type.Boolean({
      description:
        'Every member must pass a second factor at sign-in; until one is set up, only setup pages open.',
    }),
  },
  { additionalProperties: false },
);

const SignInMethods = Type.Object({
  password_set: Type.Boolean({ description: 'Whether the account has a password.' }),
  second_factor_required: Type.Boolean({ description: "The tenant's rule (sign-in-policy)." }),
  factors: Type.Array(
    Type.Object({
      id: Id,
      kind: Type.Union([Type.Literal('email'), Type.Literal('totp'), Type.Literal('passkey')]),
      name: Type.String(),
      created_at: Timestamp,
      last_used_at: NullableTimestamp,
    }),
    { description: 'Second factors; a passkey also signs in alone.' },
  ),
  recovery_codes_left: Type.Integer({ minimum: 0, maximum: 10 }),
  identities: Type.Array(
    Type.Object({ id: Id, provider: Type.String(), created_at: Timestamp, last_used_at: NullableTimestamp }),
    { description: 'Linked GitHub or OpenID Connect identities (never their tokens).' },
  ),
});

export function registerSignInRoutes(app: App): void {
  const user = { auth: 'user' } as const;
  const hide = { hide: true } as const;

  app.post('/profile/email-code/enable', { config: user, schema: hide }, async (request, reply) => {
    const principal = signedIn(request);
    if (!principal.user.email_verified) {
      const message = 'Confirm your email address first: the codes are sent to it.';
      return sendPage(reply, 400, messagePage('Not done', message, PROFILE));
    }
    await request.withTenant(async (tx) => {
      const [factor] = await tx<{ id: string }[]>`
        insert into user_factors (tenant_id, user_id, kind, name)
        values (${principal.user.tenant_id}::uuid, ${principal.user.id}::uuid, 'email', 'Code by email')
        on conflict do nothing returning id`;
      if (factor === undefined) return;
      await recordFor(tx, principal, {
        action: 'factor.enrolled',
        target: `user:${principal.user.id}`,
        data: { user_id: principal.user.id, kind: 'email', factor_id: factor.id },
      });
    });
    return reply.redirect('/profile?notice=email-code-on', 303);
  });

  app.post('/profile/email-code/disable', { config: user, schema: hide }, async (request, reply) => {
    const principal = signedIn(request);
    try {
      assertRecentSignIn(principal);
    } catch (error) {
      if (needsReauth(error)) return reauthRedirect(reply, '/profile');
      throw error;
    }
    await request.withTenant(async (tx) => {
      const [factor] = await tx<{ id: string }[]>`
        delete from user_factors where user_id = ${principal.user.id}::uuid and kind = 'email' returning id`;
      if (factor === undefined) return;
      await recordFor(tx, principal, {
        action: 'factor.removed',
        target: `user:${principal.user.id}`,
        data: { user_id: principal.user.id, kind: 'email', factor_id: factor.id },
      });
    });
    return reply.redirect('/profile?notice=email-code-off', 303);
  });

  const policyErrors = { 400: ProblemSchema, 401: ProblemSchema, 403: ProblemSchema };
  app.get(
    '/api/v1/me/sign-in-methods',
    {
      config: user,
      schema: {
        operationId: 'getSignInMethods',
        summary:
          "The signed-in user's ways to sign in: password, second factors, recovery codes, linked identities",
        description:
          'Read only. Factors and identities are added and removed on /profile, where a sign-in within the last 10 minutes is asked for first.',
        tags: ['accounts'],
        response: { 200: SignInMethods, 401: ProblemSchema, 403: ProblemSchema },
      },
    },
    async (request) => {
      const { user: me } = signedIn(request);
      return request.withTenant(async (tx) => {
        const [factors, identities, recoveryCodes, required, [account]] = await Promise.all([
          userFactors(tx, me.id),
          listIdentities(tx, me.id),
          unusedRecoveryCodes(tx, me.id),
          requiresSecondFactor(tx, me.tenant_id),
          tx<
            { password: boolean }[]
          >`select password_hash is not null as password from users where id = ${me.id}::uuid`,
        ]);
        return {
          password_set: account?.password ?? false,
          second_factor_required: required,
          factors,
          recovery_codes_left: recoveryCodes,
          identities,
        };
      });
    },
  );

  app.get(
    '/api/v1/tenant/sign-in-policy',
    {
      config: user,
      schema: {
        operationId: 'getSignInPolicy',
        summary: "The tenant's sign-in rule: whether every member must use a second factor",
        tags: ['members'],
        response: { 200: PolicySchema, ...policyErrors },
      },
    },
    async (request) => ({
      require_second_factor: await request.withTenant((tx) =>
        requiresSecondFactor(tx, signedIn(request).user.tenant_id),
      ),
    }),
  );

  app.put(
    '/api/v1/tenant/sign-in-policy',
    {
      config: user,
      schema: {
        operationId: 'setSignInPolicy',
        summary: 'Require (or stop requiring) a second factor of every member (owners only)',
        tags: ['members'],
        body: PolicySchema,
        response: { 200: PolicySchema, ...policyErrors },
      },
    },
    async (request) => ({
      require_second_factor: await request.withTenant((tx) =>
        setRequireSecondFactor(tx, signedIn(request), request.body.require_second_factor),
      ),
    }),
  );

  app.post('/dashboard/members/sign-in-policy', { config: user, schema: hide }, async (request, reply) => {
    const wanted = bodyText(request.body, 'require_second_factor', 5);
    if (wanted !== 'true' && wanted !== 'false') {
      return sendPage(
        reply,
        400,
        messagePage('Not done', 'Choose whether to require a second step.', MEMBERS),
      );
    }
    const principal: Principal = signedIn(request);
    try {
      await request.withTenant((tx) => setRequireSecondFactor(tx, principal, wanted === 'true'));
    } catch (error) {
      const shown = shownError(reply, error);
      return sendPage(reply, shown.status, messagePage('Not allowed', shown.message, MEMBERS));
    }
    return reply.redirect('/dashboard/members?notice=sign-in-policy-changed', 303);
  });
}

const MEMBERS = { href: '/dashboard/members', text: 'Back to members' };
const PROFILE = { href: '/profile', text: 'Back to your profile' };
