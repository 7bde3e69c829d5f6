import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import type { LightMyRequestResponse } from 'fastify';
import {
  ACTIONS,
  type Action,
  PERMISSIONS,
  REFUSALS,
  ROLES,
  type Role,
  roleMay,
} from '../src/accounts/roles.ts';
import { withTenant } from '../src/db/tenant.ts';
import { resolveRelayToken } from '../src/relay/connections.ts';
import { startThread } from '../src/relay/threads.ts';
import { escapeHtml } from '../src/web/html.ts';
import { createAccount, mintInvite, type TestAccount } from './helpers/accounts.ts';
import { useTestApp } from './helpers/app.ts';
import { callbackDeliveryRow, callbackEndpoint } from './helpers/callbacks.ts';
import { storedPasskey } from './helpers/passkeys.ts';
import { approvedConnection } from './helpers/relay.ts';
import { registeredRoutes } from './helpers/routes.ts';

// ACC-12. Attack: a member of a tenant uses routes their role does not
// allow — renames, stops or deletes an agent someone else created, replaces
// its credentials, reads its address, output or egress, reads or exports the
// audit log, lists invites with the invitees' emails, changes roles or
// removes people. The suite is generated from the role table
// (src/accounts/roles.ts): every route the app serves under /api/v1,
// /dashboard and /profile must have a row below (a new route fails until it
// has one), and each row is probed as every role, on an agent the caller
// created and on one a colleague created. The table says allowed or not;
// allowed must answer neither 401, 403, 404 nor 5xx; refused must be 403
// (problem code `forbidden` on the API, the "Not allowed" page on pages).

const ctx = useTestApp();
const ORIGIN = () => new URL(ctx.testApp.config.publicUrl).origin;

const accounts = {} as Record<Role, TestAccount>;
/** Creates the "others'" agents; a member, so no actor's own rights come from being its creator. */
let colleague: TestAccount;
/** Of another tenant: asks to connect to the agents whose connections are decided. */
let outsider: TestAccount;

async function promote(account: TestAccount, role: Role): Promise<void> {
  await ctx.db.superuser`update users set role = ${role} where id = ${account.user.id}::uuid`;
}

ctx.before(async () => {
  accounts.owner = await createAccount(ctx.db, ctx.testApp);
  accounts.admin = await createAccount(ctx.db, ctx.testApp, { kind: 'member', tenantOf: accounts.owner });
  await promote(accounts.admin, 'admin');
  accounts.member = await createAccount(ctx.db, ctx.testApp, { kind: 'member', tenantOf: accounts.owner });
  colleague = await createAccount(ctx.db, ctx.testApp, { kind: 'member', tenantOf: accounts.owner });
  outsider = await createAccount(ctx.db, ctx.testApp);
});

// ---------------------------------------------------------------- fixtures

const unique = (prefix: string) => `${prefix}-${randomBytes(5).toString('hex')}`;

/** A fresh echo agent created (through the API) by `creator`, with one credential; its id. */
async function agentBy(creator: TestAccount): Promise<string> {
  const handle = unique('roles');
  const response = await ctx.testApp.app.inject({
    method: 'POST',
    url: '/api/v1/agents',
    headers: { authorization: `Bearer ${creator.apiToken}` },
    payload: { name: handle, handle, template: 'echo', credentials: { echo_token: `probe-${unique('v')}` } },
  });
  assert.equal(response.statusCode, 201, response.body);
  return response.json<{ id: string }>().id;
}

/** A pending request by another tenant to a fresh published agent of `creator`; the connection's id. */
async function connectionTo(creator: TestAccount): Promise<string> {
  const agentId = await agentBy(creator);
  const [agent] = await ctx.db.superuser<{ handle: string }[]>`
    update agents set card_published = true where id = ${agentId}::uuid returning handle`;
  const response = await ctx.testApp.app.inject({
    method: 'POST',
    url: '/api/v1/connections',
    headers: { authorization: `Bearer ${outsider.apiToken}` },
    payload: { handle: agent?.handle, message: 'May I?' },
  });
  assert.equal(response.statusCode, 201, response.body);
  // Set-up, not a probe: the outsider asks once per probe, far past RLY-5's hourly bucket.
  await ctx.testApp.rateLimits.refund('relay_connect_user', outsider.user.id);
  return response.json<{ id: string }>().id;
}

/** An open thread the outsider started with a fresh published agent of `creator` (approved by the owner); its id. */
async function threadWith(creator: TestAccount): Promise<string> {
  const id = await agentBy(creator);
  const [agent] = await ctx.db.superuser<{ handle: string }[]>`
    update agents set card_published = true where id = ${id}::uuid returning handle`;
  const { relayToken } = await approvedConnection(ctx, accounts.owner, outsider, {
    id,
    handle: agent?.handle ?? '',
  });
  await ctx.testApp.rateLimits.refund('relay_connect_user', outsider.user.id);
  const grant = await resolveRelayToken(ctx.db.app, relayToken);
  assert.ok(grant !== undefined);
  const started = await withTenant(ctx.db.app, grant.targetTenantId, (tx) =>
    startThread(tx, grant, 'Hello?'),
  );
  return started.thread.id;
}

async function freshMember(): Promise<string> {
  return (await createAccount(ctx.db, ctx.testApp, { kind: 'member', tenantOf: accounts.owner })).user.id;
}

async function freshInvite(): Promise<string> {
  const invite = await mintInvite(ctx.db, {
    kind: 'member',
    email: `${unique('invitee')}@example.test`,
    tenantId: accounts.owner.user.tenant_id,
  });
  return invite.id;
}

// ---------------------------------------------------------------- the rows

/**
 * What a path's `:id` names: a fresh agent (own or a colleague's), a pending connection to one, an open thread
 * with one, a member, an invite, a template, the caller's token.
 */
type Target =
  | 'agent'
  | 'connection'
  | 'thread'
  | 'member'
  | 'fresh-member'
  | 'invite'
  | 'template'
  | 'own-token'
  | 'own-session'
  | 'own-passkey'
  | 'inbound-webhook'
  | 'callback-endpoint'
  | 'callback-delivery';

interface Probe {
  /** The row of the role table that decides; 'signed-in': any user, on their own things only. */
  readonly action: Action | 'signed-in';
  readonly target?: Target;
  /** The body; `agentId` is the target agent, for routes that name it in the body (callback endpoints). */
  readonly body?: (ids?: { agentId?: string }) => Record<string, string | number | boolean | null | string[]>;
}

const form = (values: Record<string, string>) => () => values;
const agentCreate = () => {
  const handle = unique('roles');
  return { name: handle, handle, template: 'echo' };
};

/**
 * Every route a signed-in user reaches. Writes of 'signed-in' rows act only
 * on the caller's own tokens, sessions and profile (their own suites cover
 * them): they are listed so that a new route must be placed, and only their
 * GETs are probed here.
 */
const ROUTES: Record<string, readonly Probe[]> = {
  'GET /api/v1/me': [{ action: 'signed-in' }],
  'GET /api/v1/me/sign-in-methods': [{ action: 'signed-in' }],
  'GET /api/v1/tokens': [{ action: 'signed-in' }],
  'POST /api/v1/tokens': [{ action: 'signed-in' }],
  'DELETE /api/v1/tokens/:id': [{ action: 'signed-in' }],
  'GET /api/v1/sessions': [{ action: 'signed-in' }],
  'DELETE /api/v1/sessions': [{ action: 'signed-in' }],
  'DELETE /api/v1/sessions/:id': [{ action: 'signed-in' }],
  'GET /api/v1/templates': [{ action: 'signed-in' }],
  'GET /api/v1/templates/:id': [{ action: 'signed-in', target: 'template' }],
  'GET /api/v1/agents': [{ action: 'agent.read' }],
  'POST /api/v1/agents': [{ action: 'agent.create', body: agentCreate }],
  'GET /api/v1/agents/:id': [{ action: 'agent.read', target: 'agent' }],
  'PATCH /api/v1/agents/:id': [{ action: 'agent.manage', target: 'agent', body: form({ name: 'renamed' }) }],
  'DELETE /api/v1/agents/:id': [{ action: 'agent.manage', target: 'agent' }],
  'GET /api/v1/agents/:id/credentials': [{ action: 'agent.read', target: 'agent' }],
  'PUT /api/v1/agents/:id/credentials/:name': [
    { action: 'credential.manage', target: 'agent', body: form({ value: 'replaced-value-1234567890' }) },
  ],
  'DELETE /api/v1/agents/:id/credentials/:name': [{ action: 'credential.manage', target: 'agent' }],
  'GET /api/v1/agents/:id/inbound-webhooks': [{ action: 'agent.manage', target: 'agent' }],
  'GET /api/v1/webhook-endpoints/:id/deliveries': [{ action: 'relay.approve', target: 'callback-endpoint' }],
  'POST /api/v1/webhook-endpoints/:id/replay-failed': [
    { action: 'relay.approve', target: 'callback-endpoint', body: form({ since: '2026-01-01T00:00:00Z' }) },
  ],
  'GET /api/v1/webhook-deliveries/:id': [{ action: 'relay.approve', target: 'callback-delivery' }],
  'POST /api/v1/webhook-deliveries/:id/replay': [{ action: 'relay.approve', target: 'callback-delivery' }],
  'POST /api/v1/agents/:id/inbound-webhooks': [{ action: 'agent.manage', target: 'agent' }],
  'DELETE /api/v1/agents/:id/inbound-webhooks/:endpoint_id': [
    { action: 'agent.manage', target: 'inbound-webhook' },
  ],
  'GET /api/v1/agents/:id/instance': [{ action: 'agent.read', target: 'agent' }],
  'POST /api/v1/agents/:id/start': [{ action: 'agent.manage', target: 'agent' }],
  'POST /api/v1/agents/:id/stop': [{ action: 'agent.manage', target: 'agent' }],
  'POST /api/v1/agents/:id/restart': [{ action: 'agent.manage', target: 'agent' }],
  'GET /api/v1/agents/:id/logs': [{ action: 'agent.address', target: 'agent' }],
  'GET /api/v1/agents/:id/egress': [{ action: 'agent.address', target: 'agent' }],
  'GET /api/v1/agents/:id/usage': [{ action: 'agent.address', target: 'agent' }],
  'PUT /api/v1/agents/:id/model-limits': [
    {
      action: 'agent.manage',
      target: 'agent',
      body: () => ({ requests_per_minute: 60, tokens_per_day: null }),
    },
  ],
  'PUT /api/v1/agents/:id/card': [
    { action: 'agent.manage', target: 'agent', body: () => ({ published: true }) },
  ],
  // Unpublished probe agents: an allowed caller gets 409 (card_unpublished / listing_state), a refused one 403.
  'POST /api/v1/agents/:id/listing': [{ action: 'agent.manage', target: 'agent' }],
  'DELETE /api/v1/agents/:id/listing': [{ action: 'agent.manage', target: 'agent' }],
  'GET /api/v1/directory': [{ action: 'signed-in' }],
  'GET /api/v1/connections': [{ action: 'signed-in' }],
  'POST /api/v1/connections': [{ action: 'signed-in' }],
  'POST /api/v1/connections/:id/approve': [{ action: 'relay.approve', target: 'connection' }],
  'POST /api/v1/connections/:id/deny': [{ action: 'relay.approve', target: 'connection' }],
  'POST /api/v1/connections/:id/revoke': [{ action: 'relay.approve', target: 'connection' }],
  'POST /api/v1/connections/:id/relay-token': [{ action: 'signed-in' }],
  'GET /api/v1/threads': [{ action: 'signed-in' }],
  'POST /api/v1/threads/:id/access-token': [{ action: 'relay.approve', target: 'thread' }],
  'GET /api/v1/audit/events': [{ action: 'audit.read' }],
  'GET /api/v1/audit/head': [{ action: 'audit.read' }],
  'GET /api/v1/audit/export': [{ action: 'audit.read' }],
  'GET /api/v1/audit/proof': [{ action: 'audit.read' }],
  'GET /api/v1/audit/bundle': [{ action: 'audit.read' }],
  'GET /api/v1/invites': [{ action: 'invite.manage' }],
  'POST /api/v1/invites': [
    { action: 'invite.manage', body: () => ({ email: `${unique('invitee')}@example.test` }) },
  ],
  'DELETE /api/v1/invites/:id': [{ action: 'invite.manage', target: 'invite' }],
  'GET /api/v1/members': [{ action: 'member.list' }],
  'PATCH /api/v1/members/:id': [
    { action: 'member.manage', target: 'member', body: form({ role: 'member' }) },
    { action: 'owner.manage', target: 'fresh-member', body: form({ role: 'owner' }) },
  ],
  'DELETE /api/v1/members/:id': [{ action: 'member.manage', target: 'fresh-member' }],
  'GET /api/v1/tenant/sign-in-policy': [{ action: 'signed-in' }],
  // Set to false: requiring a second factor would hold every account here back to /profile.
  'PUT /api/v1/tenant/sign-in-policy': [
    { action: 'tenant.sign_in_policy', body: () => ({ require_second_factor: false }) },
  ],

  'GET /dashboard': [{ action: 'signed-in' }],
  'GET /dashboard/settings/tokens': [{ action: 'signed-in' }],
  'POST /dashboard/settings/tokens': [{ action: 'signed-in' }],
  'GET /dashboard/settings/tokens/:id/revoke': [{ action: 'signed-in', target: 'own-token' }],
  'POST /dashboard/settings/tokens/:id/revoke': [{ action: 'signed-in' }],
  'GET /profile': [{ action: 'signed-in' }],
  'GET /profile/sessions/revoke-all': [{ action: 'signed-in' }],
  'POST /profile/sessions/revoke-all': [{ action: 'signed-in' }],
  'GET /profile/sessions/:id/revoke': [{ action: 'signed-in', target: 'own-session' }],
  'POST /profile/sessions/:id/revoke': [{ action: 'signed-in' }],
  'POST /profile/password': [{ action: 'signed-in' }],
  'POST /profile/email': [{ action: 'signed-in' }],
  'POST /profile/email/verify': [{ action: 'signed-in' }],
  'POST /profile/email-code/enable': [{ action: 'signed-in' }],
  'POST /profile/email-code/disable': [{ action: 'signed-in' }],
  'GET /profile/totp': [{ action: 'signed-in' }],
  'POST /profile/totp/start': [{ action: 'signed-in' }],
  'GET /profile/totp/enrol': [{ action: 'signed-in' }],
  'POST /profile/totp/confirm': [{ action: 'signed-in' }],
  'GET /profile/totp/recovery-codes': [{ action: 'signed-in' }],
  'GET /profile/totp/recovery-codes/regenerate': [{ action: 'signed-in' }],
  'POST /profile/totp/recovery-codes/regenerate': [{ action: 'signed-in' }],
  'GET /profile/totp/remove': [{ action: 'signed-in' }],
  'POST /profile/totp/remove': [{ action: 'signed-in' }],
  'POST /profile/passkeys/options': [{ action: 'signed-in' }],
  'POST /profile/passkeys': [{ action: 'signed-in' }],
  'GET /profile/passkeys/:id/rename': [{ action: 'signed-in', target: 'own-passkey' }],
  'POST /profile/passkeys/:id/rename': [{ action: 'signed-in' }],
  'GET /profile/passkeys/:id/remove': [{ action: 'signed-in', target: 'own-passkey' }],
  'POST /profile/passkeys/:id/remove': [{ action: 'signed-in' }],
  'POST /profile/link/:provider': [{ action: 'signed-in' }],
  'POST /profile/identities/:id/unlink': [{ action: 'signed-in' }],
  'GET /dashboard/agents': [{ action: 'agent.read' }],
  'GET /dashboard/agents/new': [{ action: 'agent.create' }],
  'POST /dashboard/agents': [{ action: 'agent.create', body: agentCreate }],
  'GET /dashboard/agents/:id': [{ action: 'agent.read', target: 'agent' }],
  'GET /dashboard/agents/:id/state': [{ action: 'agent.read', target: 'agent' }],
  'POST /dashboard/agents/:id': [
    { action: 'agent.manage', target: 'agent', body: form({ name: 'renamed' }) },
  ],
  'POST /dashboard/agents/:id/credentials': [
    {
      action: 'credential.manage',
      target: 'agent',
      body: form({ name: 'echo_token', value: 'replaced-value-1234567890' }),
    },
  ],
  'GET /dashboard/agents/:id/credentials/:name/delete': [{ action: 'credential.manage', target: 'agent' }],
  'GET /dashboard/agents/:id/inbound-webhooks': [{ action: 'agent.manage', target: 'agent' }],
  'POST /dashboard/agents/:id/inbound-webhooks': [{ action: 'agent.manage', target: 'agent' }],
  'GET /dashboard/agents/:id/inbound-webhooks/:endpoint_id/delete': [
    { action: 'agent.manage', target: 'inbound-webhook' },
  ],
  'POST /dashboard/agents/:id/inbound-webhooks/:endpoint_id/delete': [
    { action: 'agent.manage', target: 'inbound-webhook' },
  ],
  'POST /dashboard/agents/:id/credentials/:name/delete': [{ action: 'credential.manage', target: 'agent' }],
  'GET /dashboard/agents/:id/delete': [{ action: 'agent.manage', target: 'agent' }],
  'POST /dashboard/agents/:id/delete': [{ action: 'agent.manage', target: 'agent' }],
  'GET /api/v1/webhook-endpoints': [{ action: 'signed-in' }],
  'POST /api/v1/webhook-endpoints': [
    {
      action: 'relay.approve',
      target: 'agent',
      body: (ids) => ({
        url: 'https://93.184.215.14/roles',
        event_types: ['thread.closed'],
        agent_id: ids?.agentId ?? null,
      }),
    },
  ],
  'GET /api/v1/webhook-endpoints/:id': [{ action: 'relay.approve', target: 'callback-endpoint' }],
  'PATCH /api/v1/webhook-endpoints/:id': [
    { action: 'relay.approve', target: 'callback-endpoint', body: form({ description: 'renamed' }) },
  ],
  'DELETE /api/v1/webhook-endpoints/:id': [{ action: 'relay.approve', target: 'callback-endpoint' }],
  'POST /api/v1/webhook-endpoints/:id/rotate-secret': [
    { action: 'relay.approve', target: 'callback-endpoint' },
  ],
  'POST /api/v1/webhook-endpoints/:id/enable': [{ action: 'relay.approve', target: 'callback-endpoint' }],
  'GET /dashboard/webhooks': [{ action: 'signed-in' }],
  'POST /dashboard/webhooks': [
    {
      action: 'relay.approve',
      target: 'agent',
      body: (ids) => ({
        url: 'https://93.184.215.14/roles',
        'event.thread.closed': 'on',
        agent_id: ids?.agentId ?? null,
      }),
    },
  ],
  'GET /dashboard/webhooks/:id': [{ action: 'relay.approve', target: 'callback-endpoint' }],
  'POST /dashboard/webhooks/:id': [
    {
      action: 'relay.approve',
      target: 'callback-endpoint',
      body: form({ url: 'https://93.184.215.14/roles', 'event.thread.closed': 'on' }),
    },
  ],
  'POST /dashboard/webhooks/:id/enable': [{ action: 'relay.approve', target: 'callback-endpoint' }],
  'POST /dashboard/webhooks/:id/replay-failed': [
    { action: 'relay.approve', target: 'callback-endpoint', body: form({ since: '2026-01-01T00:00' }) },
  ],
  'POST /dashboard/webhooks/:id/deliveries/:delivery_id/replay': [
    { action: 'relay.approve', target: 'callback-delivery' },
  ],
  'GET /dashboard/webhooks/:id/rotate': [{ action: 'relay.approve', target: 'callback-endpoint' }],
  'POST /dashboard/webhooks/:id/rotate': [{ action: 'relay.approve', target: 'callback-endpoint' }],
  'GET /dashboard/webhooks/:id/delete': [{ action: 'relay.approve', target: 'callback-endpoint' }],
  'POST /dashboard/webhooks/:id/delete': [{ action: 'relay.approve', target: 'callback-endpoint' }],
  'POST /dashboard/agents/:id/model-limits': [
    {
      action: 'agent.manage',
      target: 'agent',
      body: form({ requests_per_minute: '30', tokens_per_day: '' }),
    },
  ],
  'POST /dashboard/agents/:id/card': [
    { action: 'agent.manage', target: 'agent', body: form({ published: 'true' }) },
  ],
  'POST /dashboard/agents/:id/listing': [
    { action: 'agent.manage', target: 'agent', body: form({ action: 'request' }) },
  ],
  'POST /dashboard/agents/:id/start': [{ action: 'agent.manage', target: 'agent' }],
  'POST /dashboard/agents/:id/stop': [{ action: 'agent.manage', target: 'agent' }],
  'POST /dashboard/agents/:id/restart': [{ action: 'agent.manage', target: 'agent' }],
  'GET /dashboard/audit': [{ action: 'audit.read' }],
  'GET /dashboard/settings/invites': [{ action: 'invite.manage' }],
  'POST /dashboard/settings/invites': [
    { action: 'invite.manage', body: () => ({ email: `${unique('invitee')}@example.test` }) },
  ],
  'GET /dashboard/settings/invites/:id/revoke': [{ action: 'invite.manage', target: 'invite' }],
  'POST /dashboard/settings/invites/:id/revoke': [{ action: 'invite.manage', target: 'invite' }],
  'GET /dashboard/connections': [{ action: 'signed-in' }],
  'GET /dashboard/connections/incoming': [{ action: 'signed-in' }],
  'GET /dashboard/connections/outgoing': [{ action: 'signed-in' }],
  'POST /dashboard/connections': [{ action: 'signed-in' }],
  'POST /dashboard/connections/:id/approve': [{ action: 'relay.approve', target: 'connection' }],
  'POST /dashboard/connections/:id/deny': [{ action: 'relay.approve', target: 'connection' }],
  'GET /dashboard/connections/:id/revoke': [{ action: 'relay.approve', target: 'connection' }],
  'POST /dashboard/connections/:id/revoke': [{ action: 'relay.approve', target: 'connection' }],
  'GET /dashboard/threads': [{ action: 'signed-in' }],
  'GET /dashboard/threads/:id': [{ action: 'relay.approve', target: 'thread' }],
  'POST /dashboard/threads/:id/messages': [
    { action: 'relay.approve', target: 'thread', body: form({ text: 'Owner here.' }) },
  ],
  'GET /dashboard/threads/:id/close': [{ action: 'relay.approve', target: 'thread' }],
  'POST /dashboard/threads/:id/close': [{ action: 'relay.approve', target: 'thread' }],
  'GET /dashboard/members': [{ action: 'member.list' }],
  'POST /dashboard/members/:id/role': [
    { action: 'member.manage', target: 'member', body: form({ role: 'member' }) },
    { action: 'owner.manage', target: 'fresh-member', body: form({ role: 'owner' }) },
  ],
  'GET /dashboard/members/:id/remove': [{ action: 'member.manage', target: 'member' }],
  'POST /dashboard/members/:id/remove': [{ action: 'member.manage', target: 'fresh-member' }],
  'POST /dashboard/members/sign-in-policy': [
    { action: 'tenant.sign_in_policy', body: form({ require_second_factor: 'false' }) },
  ],
};

function signedInRoutes(): string[] {
  return registeredRoutes(ctx.testApp.app)
    .filter((route) => route.method !== 'HEAD')
    .filter((route) => /^\/(api\/v1|dashboard|profile)(\/|$)/.test(route.path))
    .map((route) => `${route.method} ${route.path}`);
}

// ---------------------------------------------------------------- probing

interface Outcome {
  readonly allowed: boolean;
  readonly response: LightMyRequestResponse;
}

async function probe(role: Role, key: string, probe: Probe, own: boolean): Promise<Outcome> {
  const actor = accounts[role];
  const [method = 'GET', pattern = ''] = key.split(' ');
  let createdBy: string | undefined;
  let url = pattern;
  let agentId: string | undefined;
  if (probe.target === 'agent') {
    const creator = own ? actor : colleague;
    createdBy = creator.user.id;
    agentId = await agentBy(creator);
    url = url.replace(':id', agentId).replace(':name', 'echo_token');
  } else if (probe.target === 'callback-endpoint') {
    const creator = own ? actor : colleague;
    createdBy = creator.user.id;
    const [endpoint] = await ctx.db.superuser<{ id: string }[]>`
      insert into callback_endpoints (tenant_id, agent_id, url, event_types, secret_salt)
      values (${creator.user.tenant_id}::uuid, ${await agentBy(creator)}::uuid, 'https://93.184.215.14/roles',
              array['thread.closed'], ${randomBytes(16)})
      returning id`;
    url = url.replace(':id', endpoint?.id ?? '');
  } else if (probe.target === 'connection') {
    const creator = own ? actor : colleague;
    createdBy = creator.user.id;
    url = url.replace(':id', await connectionTo(creator));
  } else if (probe.target === 'thread') {
    const creator = own ? actor : colleague;
    createdBy = creator.user.id;
    url = url.replace(':id', await threadWith(creator));
  } else if (probe.target === 'member') {
    url = url.replace(':id', colleague.user.id);
  } else if (probe.target === 'fresh-member') {
    url = url.replace(':id', await freshMember());
  } else if (probe.target === 'template') {
    url = url.replace(':id', 'echo');
  } else if (probe.target === 'invite') {
    url = url.replace(':id', await freshInvite());
  } else if (probe.target === 'inbound-webhook') {
    const creator = own ? actor : colleague;
    createdBy = creator.user.id;
    const agentId = await agentBy(creator);
    const [endpoint] = await ctx.db.superuser<{ id: string }[]>`
      insert into inbound_webhooks (tenant_id, agent_id, description, secret_salt)
      values (${creator.user.tenant_id}::uuid, ${agentId}::uuid, 'roles', ${randomBytes(16)}) returning id`;
    url = url.replace(':id', agentId).replace(':endpoint_id', endpoint?.id ?? '');
  } else if (probe.target === 'callback-delivery') {
    const creator = own ? actor : colleague;
    createdBy = creator.user.id;
    const endpoint = await callbackEndpoint(ctx.db, 'https://hooks.example/roles', {
      tenantId: creator.user.tenant_id,
      agentId: await agentBy(creator),
    });
    const delivery = (await callbackDeliveryRow(ctx.db, endpoint)).id;
    // A page names the endpoint and its delivery; the API names the delivery alone.
    url = url.includes(':delivery_id')
      ? url.replace(':delivery_id', delivery).replace(':id', endpoint.id)
      : url.replace(':id', delivery);
  } else if (probe.target === 'own-token') {
    const [token] = await ctx.db.superuser<{ id: string }[]>`
      select id from api_tokens where user_id = ${actor.user.id}::uuid limit 1`;
    url = url.replace(':id', token?.id ?? '');
  } else if (probe.target === 'own-passkey') {
    url = url.replace(':id', await storedPasskey(ctx.db, actor.user));
  } else if (probe.target === 'own-session') {
    const [session] = await ctx.db.superuser<{ id: string }[]>`
      select id from sessions where user_id = ${actor.user.id}::uuid and revoked_at is null limit 1`;
    url = url.replace(':id', session?.id ?? '');
  }
  const api = pattern.startsWith('/api/');
  const body = probe.body?.(agentId === undefined ? {} : { agentId });
  const headers: Record<string, string> = api
    ? { authorization: `Bearer ${actor.apiToken}` }
    : { cookie: actor.sessionCookie, origin: ORIGIN() };
  let payload: string | undefined;
  if (body !== undefined && api) payload = JSON.stringify(body);
  if (body !== undefined && !api) {
    payload = new URLSearchParams(
      Object.entries(body).map(([name, value]): [string, string] => [name, String(value ?? '')]),
    ).toString();
  }
  if (method !== 'GET' && method !== 'DELETE') {
    headers['content-type'] = api ? 'application/json' : 'application/x-www-form-urlencoded';
    payload ??= api ? '{}' : '';
  }
  const response = await ctx.testApp.app.inject({
    method: method as 'GET',
    url,
    headers,
    ...(payload === undefined ? {} : { payload }),
  });
  const allowed = probe.action === 'signed-in' || roleMay(role, actor.user.id, probe.action, createdBy);
  return { allowed, response };
}

function judge(role: Role, key: string, probe: Probe, own: boolean, outcome: Outcome): string | undefined {
  const { response } = outcome;
  const onAgent = [
    'agent',
    'connection',
    'thread',
    'inbound-webhook',
    'callback-endpoint',
    'callback-delivery',
  ].includes(probe.target ?? '');
  const where = `${role} ${key}${onAgent ? (own ? ' (own agent)' : " (a colleague's agent)") : ''}${
    probe.body === undefined ? '' : ` ${JSON.stringify(probe.body())}`
  }`;
  if (outcome.allowed) {
    if ([401, 403, 404].includes(response.statusCode) || response.statusCode >= 500) {
      return `${where}: allowed by the table, answered ${response.statusCode} ${response.body.slice(0, 200)}`;
    }
    return undefined;
  }
  if (response.statusCode !== 403) return `${where}: refused by the table, answered ${response.statusCode}`;
  if (key.includes(' /api/') && response.json<{ code?: string }>().code !== 'forbidden') {
    return `${where}: a 403 without the code forbidden`;
  }
  // A page says why: the "Not allowed" page, or the page acted on with the table's refusal on it.
  const refusal = escapeHtml(REFUSALS[probe.action as Action]);
  if (!key.includes(' /api/') && !response.body.includes('Not allowed') && !response.body.includes(refusal)) {
    return `${where}: a 403 page that does not say why`;
  }
  return undefined;
}

describe('roles, generated from the role table', () => {
  test('ACC-12: every signed-in route the app serves has a row in this suite, and every row is served', () => {
    const served = signedInRoutes();
    assert.ok(served.includes('GET /api/v1/agents'), `the route listing was read (${served.length} routes)`);
    assert.deepEqual(
      served.filter((key) => ROUTES[key] === undefined),
      [],
      'served but not placed in the role table',
    );
    assert.deepEqual(
      Object.keys(ROUTES).filter((key) => !served.includes(key)),
      [],
      'rows for routes the app does not serve',
    );
    const probed = new Set(Object.values(ROUTES).flatMap((probes) => probes.map((p) => p.action)));
    assert.deepEqual(
      ACTIONS.filter((action) => !probed.has(action)),
      [],
      'every action of the table is probed by some route',
    );
  });

  test('ACC-12: as owner, admin and member, every route answers as the role table says, on own and on colleagues’ agents', async () => {
    const failures: string[] = [];
    let probes = 0;
    for (const role of ROLES) {
      for (const [key, rows] of Object.entries(ROUTES)) {
        for (const row of rows) {
          if (row.action === 'signed-in') {
            if (!key.startsWith('GET ')) continue;
            const outcome = await probe(role, key, row, true);
            probes += 1;
            if (outcome.response.statusCode !== 200) {
              failures.push(
                `${role} ${key}: open to every signed-in user, answered ${outcome.response.statusCode}`,
              );
            }
            continue;
          }
          const onAgent = row.target === 'agent' || row.target === 'connection' || row.target === 'thread';
          for (const own of onAgent ? [true, false] : [true]) {
            const outcome = await probe(role, key, row, own);
            probes += 1;
            const failure = judge(role, key, row, own, outcome);
            if (failure !== undefined) failures.push(failure);
          }
        }
      }
    }
    assert.deepEqual(failures, []);
    // Not vacuous: each role was refused somewhere and allowed somewhere, as the table says.
    assert.ok(probes > 150, `${probes} probes`);
    assert.equal(PERMISSIONS['audit.read'].member, 'none');
  });
});
