import { Type } from 'typebox';
import { EMAIL } from '../config.ts';
import type { App } from '../http/app.ts';
import { NextAfter, type PageCursors, PageQuery, readPage } from '../http/page-cursor.ts';
import { ProblemSchema, sendProblem } from '../http/problems.ts';
import { curlExample, ExpiryIn, Id, IdParams, NullableTimestamp, Timestamp } from '../http/schemas.ts';
import { DEFAULT_INVITE_DAYS, inviteLink } from './invites.ts';
import { signedIn } from './principal.ts';
import { RoleSchema } from './roles.ts';
import type { AccountsService } from './service.ts';

// /api/v1: me, tokens, sessions, invites. HTTP only: schemas (response
// schemas are allowlists), status codes, auth mode; the service does the work.

const errors = {
  400: ProblemSchema,
  401: ProblemSchema,
  403: ProblemSchema,
  404: ProblemSchema,
  429: ProblemSchema,
};

const Me = Type.Object({
  id: Id,
  username: Type.String(),
  email: Type.String(),
  email_verified: Type.Boolean(),
  pending_email: Type.Union([Type.String(), Type.Null()]),
  role: RoleSchema,
  is_operator: Type.Boolean(),
  tenant_id: Id,
  authenticated_by: Type.Union([Type.Literal('session'), Type.Literal('token')]),
});

const InviteBody = Type.Object(
  {
    email: Type.String({ minLength: 3, maxLength: 254 }),
    kind: Type.Optional(Type.Union([Type.Literal('member'), Type.Literal('tenant')])),
    expires_at: Type.Optional(ExpiryIn),
  },
  { additionalProperties: false },
);

/** The invite body as the document states it: the address as the service accepts it (config.ts EMAIL). */
const DocumentedInviteBody = Type.Object(
  {
    ...InviteBody.properties,
    email: Type.String({
      minLength: 5,
      maxLength: 254,
      // The service trims and lowercases before it checks; the pattern allows the spaces it trims.
      pattern: `^\\s*${EMAIL.source.slice(1, -1)}\\s*$`,
      description: 'An email address (name@domain.tld); surrounding spaces are ignored',
    }),
  },
  { additionalProperties: false },
);

const TokenListing = Type.Object({
  id: Id,
  name: Type.String(),
  prefix: Type.String(),
  last4: Type.String(),
  scope: Type.Union([Type.Literal('read'), Type.Literal('write')]),
  created_at: Timestamp,
  last_used_at: NullableTimestamp,
  expires_at: NullableTimestamp,
});

const SessionListing = Type.Object({
  id: Id,
  current: Type.Boolean(),
  created_at: Timestamp,
  last_seen_at: Timestamp,
  expires_at: Timestamp,
  user_agent: Type.Union([Type.String(), Type.Null()]),
  client_ip: Type.Union([Type.String(), Type.Null()]),
});

const InviteListing = Type.Object({
  id: Id,
  kind: Type.Union([Type.Literal('operator'), Type.Literal('tenant'), Type.Literal('member')]),
  email: Type.Union([Type.String(), Type.Null()]),
  state: Type.Union([
    Type.Literal('pending'),
    Type.Literal('used'),
    Type.Literal('revoked'),
    Type.Literal('expired'),
  ]),
  created_at: Timestamp,
  expires_at: Timestamp,
});

export function registerAccountsApi(
  app: App,
  deps: { accounts: AccountsService; publicUrl: string; cursors: PageCursors },
): void {
  const { accounts } = deps;
  const auth = { auth: 'user' as const };

  app.get(
    '/api/v1/me',
    {
      config: auth,
      schema: {
        operationId: 'getMe',
        summary: 'The signed-in user',
        tags: ['accounts'],
        ...curlExample('GET', '/api/v1/me'),
        response: { 200: Me, ...errors },
      },
    },
    async (request) => {
      const { user, via } = signedIn(request);
      return { ...user, authenticated_by: via };
    },
  );

  app.get(
    '/api/v1/tokens',
    {
      config: auth,
      schema: {
        operationId: 'listTokens',
        summary: "A page of the user's live API tokens, newest first (never their values)",
        tags: ['tokens'],
        querystring: PageQuery,
        response: {
          200: Type.Object({ tokens: Type.Array(TokenListing), next_after: NextAfter }),
          ...errors,
        },
      },
    },
    async (request) => {
      const principal = signedIn(request);
      const scope = { list: 'tokens', tenantId: principal.user.tenant_id, of: principal.user.id };
      // after and limit are attacker-controlled: the cursor must carry our MAC for this user's token list.
      const page = await readPage(deps.cursors, scope, request.query, (at) =>
        accounts.listApiTokens(principal, at),
      );
      return { tokens: page.rows, next_after: page.next };
    },
  );

  app.post(
    '/api/v1/tokens',
    {
      config: auth,
      schema: {
        operationId: 'mintToken',
        summary: 'Mint an API token; its value is in this response only',
        tags: ['tokens'],
        ...curlExample('POST', '/api/v1/tokens', { name: 'ci', scope: 'read' }),
        body: Type.Object(
          {
            name: Type.String({
              minLength: 1,
              maxLength: 100,
              description: '1 to 100 characters once surrounding spaces are trimmed',
            }),
            scope: Type.Optional(Type.Union([Type.Literal('read'), Type.Literal('write')])),
            expires_at: Type.Optional(ExpiryIn),
          },
          { additionalProperties: false },
        ),
        response: { 201: Type.Object({ token: Type.String(), ...TokenListing.properties }), ...errors },
      },
    },
    async (request, reply) => {
      const body = request.body;
      const minted = await accounts.mintApiToken(signedIn(request), {
        name: body.name,
        scope: body.scope ?? 'write',
        expiresAt: body.expires_at === undefined ? null : new Date(body.expires_at),
      });
      reply.header('cache-control', 'no-store');
      return reply.status(201).send({ token: minted.token, ...minted.listing });
    },
  );

  app.delete(
    '/api/v1/tokens/:id',
    {
      config: auth,
      schema: {
        operationId: 'revokeToken',
        summary: 'Revoke an API token',
        tags: ['tokens'],
        params: IdParams,
        response: { 204: Type.Null(), ...errors },
      },
    },
    async (request, reply) => {
      if (!(await accounts.revokeApiToken(signedIn(request), request.params.id))) {
        return sendProblem(request, reply, 'not_found');
      }
      return reply.status(204).send(null);
    },
  );

  app.get(
    '/api/v1/sessions',
    {
      config: auth,
      schema: {
        operationId: 'listSessions',
        summary: "A page of the user's live sessions, newest first",
        tags: ['sessions'],
        querystring: PageQuery,
        response: {
          200: Type.Object({ sessions: Type.Array(SessionListing), next_after: NextAfter }),
          ...errors,
        },
      },
    },
    async (request) => {
      const principal = signedIn(request);
      const scope = { list: 'sessions', tenantId: principal.user.tenant_id, of: principal.user.id };
      // after and limit are attacker-controlled: the cursor must carry our MAC for this user's session list.
      const page = await readPage(deps.cursors, scope, request.query, (at) =>
        accounts.listSessions(principal, at),
      );
      return {
        sessions: page.rows.map((s) => ({ ...s, current: s.id === principal.sessionId })),
        next_after: page.next,
      };
    },
  );

  app.delete(
    '/api/v1/sessions/:id',
    {
      config: auth,
      schema: {
        operationId: 'revokeSession',
        summary: 'Revoke one session (404 if the user has no such live session)',
        tags: ['sessions'],
        params: IdParams,
        response: { 204: Type.Null(), ...errors },
      },
    },
    async (request, reply) => {
      if (!(await accounts.revokeSession(signedIn(request), request.params.id))) {
        return sendProblem(request, reply, 'not_found');
      }
      return reply.status(204).send(null);
    },
  );

  app.delete(
    '/api/v1/sessions',
    {
      config: auth,
      schema: {
        operationId: 'revokeAllSessions',
        summary: 'Sign out everywhere: revoke every session of the user',
        tags: ['sessions'],
        response: { 200: Type.Object({ revoked: Type.Integer() }), ...errors },
      },
    },
    async (request) => ({ revoked: await accounts.signOutEverywhere(signedIn(request)) }),
  );

  app.get(
    '/api/v1/invites',
    {
      config: auth,
      schema: {
        operationId: 'listInvites',
        summary:
          'A page of the invites this user may manage, newest first: member invites of the tenant; for operators, signup invites too',
        tags: ['invites'],
        querystring: PageQuery,
        response: {
          200: Type.Object({ invites: Type.Array(InviteListing), next_after: NextAfter }),
          ...errors,
        },
      },
    },
    async (request) => {
      const principal = signedIn(request);
      // Operators' lists hold the platform's invites too: another list than their tenant's.
      const scope = {
        list: principal.user.is_operator ? 'invites+platform' : 'invites',
        tenantId: principal.user.tenant_id,
      };
      // after and limit are attacker-controlled: the cursor must carry our MAC for this list.
      const page = await readPage(deps.cursors, scope, request.query, (at) =>
        accounts.listInvitePage(principal, at),
      );
      return { invites: page.rows, next_after: page.next };
    },
  );

  app.post(
    '/api/v1/invites',
    {
      config: auth,
      schema: {
        operationId: 'createInvite',
        summary:
          'Invite a member into this tenant (owners): the link is mailed to the address and never shown. Or invite a new tenant (operators): the link is in this response only',
        tags: ['invites'],
        ...curlExample('POST', '/api/v1/invites', { email: 'new.member@example.com' }),
        body: InviteBody,
        documentedBody: DocumentedInviteBody,
        response: {
          201: Type.Object({ link: Type.Optional(Type.String()), ...InviteListing.properties }),
          ...errors,
        },
      },
    },
    async (request, reply) => {
      const { email, kind, expires_at } = request.body;
      const created = await accounts.createInvite(signedIn(request), {
        email,
        kind: kind ?? 'member',
        expiresAt:
          expires_at === undefined
            ? new Date(Date.now() + DEFAULT_INVITE_DAYS * 86400_000)
            : new Date(expires_at),
      });
      reply.header('cache-control', 'no-store');
      const link = created.token === undefined ? {} : { link: inviteLink(deps.publicUrl, created.token) };
      return reply.status(201).send({ ...link, ...created.invite });
    },
  );

  app.delete(
    '/api/v1/invites/:id',
    {
      config: auth,
      schema: {
        operationId: 'revokeInvite',
        summary: 'Revoke a pending invite',
        tags: ['invites'],
        params: IdParams,
        response: { 204: Type.Null(), ...errors },
      },
    },
    async (request, reply) => {
      if (!(await accounts.revokeInvite(signedIn(request), request.params.id))) {
        return sendProblem(request, reply, 'not_found');
      }
      return reply.status(204).send(null);
    },
  );
}
