import { randomBytes } from 'node:crypto';
import { recordFor } from '../accounts/audit-events.ts';
import { authorize, may } from '../accounts/roles.ts';
import type { Principal } from '../accounts/service.ts';
import type { TenantSql } from '../db/tenant.ts';
import { AppError } from '../errors.ts';
import {
  afterPosition,
  boundTenant,
  type PageRequest,
  type PositionedRow,
  positionColumns,
} from '../http/page-cursor.ts';
import { createSecretDeriver, type SecretDeriver } from '../webhooks/derived-secrets.ts';
import { publicKeyFor } from '../webhooks/signature.ts';
import { type CallbackRules, checkCallbackUrl } from './destination.ts';

// Callback endpoints (RLY-7): URLs a tenant registers for relay thread events
// (migration 0025). An endpoint listens on one side of the relay:
//   owner side  (agent_id):      every thread with that agent of this tenant;
//                                managed by whoever may approve its connections
//                                (relay.approve: owner, admin, the agent's creator);
//   caller side (connection_id): the threads opened over this tenant's
//                                outgoing connection; managed by the user who
//                                asked for it, or an owner or admin.
// Its `whsec_` secret (and for v1a its Ed25519 key) is derived, never stored
// (derived-secrets.ts), and shown once: on create and on rotate. A rotation
// keeps the previous salt valid for ROTATION_OVERLAP_HOURS, and deliveries
// meanwhile carry both signatures (endpointSigningSecrets, used by deliver.ts).

export const CALLBACK_EVENT_TYPES = [
  'thread.message_received',
  'thread.agent_replied',
  'thread.closed',
  'connection.revoked',
] as const;
export type CallbackEventType = (typeof CALLBACK_EVENT_TYPES)[number];
/** The most endpoints one agent, or one connection, may have. */
export const MAX_ENDPOINTS_PER_SUBJECT = 20;
/** How long the previous secret still signs after a rotation. */
export const ROTATION_OVERLAP_HOURS = 24;
export const CALLBACK_SECRET_LABEL = 'enclave.callback.secret.v1';

export type CallbackEndpointErrorCode = 'not_found' | 'validation_failed' | 'callback_endpoint_limit';

const fieldError = (message: string, field: string) =>
  new AppError<CallbackEndpointErrorCode>('validation_failed', message, { field });
/** One answer for an endpoint that is not there and one of another tenant (TEN-1). */
const noSuchEndpoint = () =>
  new AppError<CallbackEndpointErrorCode>('not_found', 'no such webhook endpoint', { field: 'id' });

/** An endpoint as its managers see it: never a secret or a salt. */
export interface CallbackEndpoint {
  readonly id: string;
  readonly agent_id: string | null;
  readonly connection_id: string | null;
  readonly url: string;
  readonly description: string;
  readonly event_types: CallbackEventType[];
  readonly sign_v1a: boolean;
  /** The v1a verification key (`whpk_…`); null without v1a. */
  readonly public_key: string | null;
  readonly state: 'enabled' | 'disabled';
  readonly disabled_reason: string | null;
  readonly consecutive_failures: number;
  /** Until when the previous secret still signs (a rotation's overlap); null when none. */
  readonly previous_secret_until: Date | null;
  readonly created_at: Date;
  readonly updated_at: Date;
}

/** What signing needs of a row (deliver.ts reads these columns). */
export interface SigningRow {
  readonly id: string;
  readonly secret_salt: Buffer;
  readonly previous_salt: Buffer | null;
  readonly previous_salt_until: Date | null;
  readonly sign_v1a: boolean;
}

interface EndpointRow extends SigningRow, Omit<CallbackEndpoint, 'public_key' | 'previous_secret_until'> {
  readonly created_by: string | null;
}

const COLUMNS =
  'id, agent_id, connection_id, url, description, event_types, secret_salt, previous_salt, previous_salt_until, ' +
  'sign_v1a, state, disabled_reason, consecutive_failures, created_by, created_at, updated_at';

export function callbackSecretDeriver(sessionKey: string): SecretDeriver {
  return createSecretDeriver(sessionKey, CALLBACK_SECRET_LABEL);
}

/**
 * The secrets a delivery is signed with now: the current one, and the
 * previous one while its rotation overlap lasts (both signatures are sent,
 * space-separated); the Ed25519 key too when the endpoint signs v1a.
 */
export function endpointSigningSecrets(
  deriver: SecretDeriver,
  row: SigningRow,
  now: Date = new Date(),
): { secrets: string[]; signingKey?: string } {
  const secrets = [deriver.secret(row.id, row.secret_salt)];
  if (row.previous_salt !== null && row.previous_salt_until !== null && row.previous_salt_until > now) {
    secrets.push(deriver.secret(row.id, row.previous_salt));
  }
  return row.sign_v1a ? { secrets, signingKey: deriver.signingKey(row.id, row.secret_salt) } : { secrets };
}

/** A URL that passed checkCallbackUrl; only checkUrl makes one, so nothing unchecked is stored. */
export interface CheckedUrl {
  readonly href: string;
  readonly checked: true;
}

export interface NewEndpoint {
  readonly url: CheckedUrl;
  readonly eventTypes: readonly CallbackEventType[];
  readonly agentId?: string | undefined;
  readonly connectionId?: string | undefined;
  readonly description?: string | undefined;
  readonly signV1a?: boolean | undefined;
}

export interface EndpointChanges {
  readonly url?: CheckedUrl | undefined;
  readonly eventTypes?: readonly CallbackEventType[] | undefined;
  readonly description?: string | undefined;
}

/** The secret (and v1a key's public half) shown once, beside the endpoint. */
export interface ShownSecret {
  readonly endpoint: CallbackEndpoint;
  readonly signing_secret: string;
}

/** Throws unless the principal manages endpoints of this agent or outgoing connection (404 when not this tenant's). */
export async function authorizeSubject(
  tx: TenantSql,
  principal: Principal,
  subject: { agentId: string | null; connectionId: string | null },
): Promise<void> {
  if (subject.agentId !== null) {
    const [agent] = await tx<{ created_by: string | null }[]>`
      select created_by from agents where ${boundTenant(tx)} and id = ${subject.agentId}::uuid`;
    if (agent === undefined) throw new AppError('not_found', 'no such agent', { field: 'agent_id' });
    authorize(principal, 'relay.approve', agent.created_by);
    return;
  }
  // The caller side: this tenant's own outgoing row (the incoming one is the target's business).
  const [connection] = await tx<{ requester_user_id: string }[]>`
    select requester_user_id from relay_connections
    where ${boundTenant(tx)} and id = ${subject.connectionId}::uuid and side = 'outgoing'`;
  if (connection === undefined) {
    throw new AppError('not_found', 'no such connection', { field: 'connection_id' });
  }
  // Same grants as relay.approve, with the requester in the creator's place.
  authorize(principal, 'relay.approve', connection.requester_user_id);
}

export function createCallbackEndpoints(deps: { sessionKey: string; rules: CallbackRules }) {
  const deriver = callbackSecretDeriver(deps.sessionKey);

  const view = (row: EndpointRow): CallbackEndpoint => ({
    id: row.id,
    agent_id: row.agent_id,
    connection_id: row.connection_id,
    url: row.url,
    description: row.description,
    event_types: row.event_types,
    sign_v1a: row.sign_v1a,
    public_key: row.sign_v1a ? publicKeyFor(deriver.signingKey(row.id, row.secret_salt)) : null,
    state: row.state,
    disabled_reason: row.disabled_reason,
    consecutive_failures: row.consecutive_failures,
    previous_secret_until: row.previous_salt_until,
    created_at: row.created_at,
    updated_at: row.updated_at,
  });

  async function managedRow(
    tx: TenantSql,
    principal: Principal,
    id: string,
    lock = false,
  ): Promise<EndpointRow> {
    const [row] = await tx<EndpointRow[]>`
      select ${tx.unsafe(COLUMNS)} from callback_endpoints
      where ${boundTenant(tx)} and id = ${id}::uuid ${lock ? tx`for update` : tx``}`;
    if (row === undefined) throw noSuchEndpoint();
    await authorizeSubject(tx, principal, { agentId: row.agent_id, connectionId: row.connection_id });
    return row;
  }

  const audit = (tx: TenantSql, principal: Principal, action: string, row: EndpointRow, data: object = {}) =>
    recordFor(tx, principal, {
      action,
      target: `webhook_endpoint:${row.id}`,
      data: {
        endpoint_id: row.id,
        ...(row.agent_id === null ? { connection_id: row.connection_id } : { agent_id: row.agent_id }),
        ...data,
      },
    });

  return {
    /** RLY-12 at registration: shape, then destination as DNS answers now. Outside any transaction (DNS may take seconds). */
    async checkUrl(text: string): Promise<CheckedUrl> {
      const target = await checkCallbackUrl(text, deps.rules, 'url');
      return { href: target.url.href, checked: true };
    },

    async create(tx: TenantSql, principal: Principal, input: NewEndpoint): Promise<ShownSecret> {
      const agentId = input.agentId ?? null;
      const connectionId = input.connectionId ?? null;
      if ((agentId === null) === (connectionId === null)) {
        throw fieldError(
          'give exactly one of agent_id (owner side) and connection_id (caller side)',
          'agent_id',
        );
      }
      await authorizeSubject(tx, principal, { agentId, connectionId });
      const [{ count } = { count: 0 }] = await tx<{ count: number }[]>`
        select count(*)::int as count from callback_endpoints
        where ${boundTenant(tx)} and ${agentId === null ? tx`connection_id = ${connectionId}::uuid` : tx`agent_id = ${agentId}::uuid`}`;
      if (count >= MAX_ENDPOINTS_PER_SUBJECT) {
        throw new AppError<CallbackEndpointErrorCode>(
          'callback_endpoint_limit',
          `an agent or a connection has at most ${MAX_ENDPOINTS_PER_SUBJECT} webhook endpoints`,
        );
      }
      const salt = randomBytes(16);
      const [row] = await tx<EndpointRow[]>`
        insert into callback_endpoints
          (tenant_id, agent_id, connection_id, url, description, event_types, secret_salt, sign_v1a, created_by)
        values (${principal.user.tenant_id}::uuid, ${agentId}::uuid, ${connectionId}::uuid, ${input.url.href},
                ${input.description ?? ''}, ${distinct(input.eventTypes)}::text[], ${salt}, ${input.signV1a ?? false},
                ${principal.user.id}::uuid)
        returning ${tx.unsafe(COLUMNS)}`;
      if (row === undefined) throw new Error('insert returned no row');
      await audit(tx, principal, 'webhook_endpoint.created', row, { event_types: row.event_types });
      return { endpoint: view(row), signing_secret: deriver.secret(row.id, salt) };
    },

    /** A page of the endpoints the principal manages, oldest first. */
    async list(
      tx: TenantSql,
      principal: Principal,
      page: PageRequest,
    ): Promise<(CallbackEndpoint & PositionedRow)[]> {
      const everyone = may(principal, 'relay.approve');
      const rows = await tx<(EndpointRow & PositionedRow)[]>`
        select ${tx.unsafe(COLUMNS)}, ${positionColumns(tx, 'created_at')} from callback_endpoints e
        where ${boundTenant(tx)} ${
          everyone
            ? tx``
            : tx`and (exists (select 1 from agents a where a.tenant_id = e.tenant_id and a.id = e.agent_id
                                and a.created_by = ${principal.user.id}::uuid)
                   or exists (select 1 from relay_connections c where c.tenant_id = e.tenant_id
                                and c.id = e.connection_id and c.side = 'outgoing'
                                and c.requester_user_id = ${principal.user.id}::uuid))`
        }
          ${afterPosition(tx, 'created_at', 'asc', page.after)}
        order by created_at, id limit ${page.limit + 1}::int4`;
      return rows.map((row) => ({ ...view(row), page_at: row.page_at, page_id: row.page_id }));
    },

    async get(tx: TenantSql, principal: Principal, id: string): Promise<CallbackEndpoint> {
      return view(await managedRow(tx, principal, id));
    },

    async update(
      tx: TenantSql,
      principal: Principal,
      id: string,
      changes: EndpointChanges,
    ): Promise<CallbackEndpoint> {
      const before = await managedRow(tx, principal, id, true);
      const [row] = await tx<EndpointRow[]>`
        update callback_endpoints set
          url = ${changes.url?.href ?? before.url},
          event_types = ${distinct(changes.eventTypes ?? before.event_types)}::text[],
          description = ${changes.description ?? before.description},
          updated_at = now()
        where ${boundTenant(tx)} and id = ${id}::uuid
        returning ${tx.unsafe(COLUMNS)}`;
      if (row === undefined) throw noSuchEndpoint();
      await audit(tx, principal, 'webhook_endpoint.updated', row, {
        changed: [
          ...(changes.url === undefined ? [] : ['url']),
          ...(changes.eventTypes === undefined ? [] : ['event_types']),
          ...(changes.description === undefined ? [] : ['description']),
        ],
      });
      return view(row);
    },

    async remove(tx: TenantSql, principal: Principal, id: string): Promise<void> {
      const row = await managedRow(tx, principal, id, true);
      await tx`delete from callback_endpoints where ${boundTenant(tx)} and id = ${id}::uuid`;
      await audit(tx, principal, 'webhook_endpoint.deleted', row);
    },

    /** A new secret, shown once; the one it replaces still signs for ROTATION_OVERLAP_HOURS. */
    async rotateSecret(tx: TenantSql, principal: Principal, id: string): Promise<ShownSecret> {
      await managedRow(tx, principal, id, true);
      const salt = randomBytes(16);
      const [row] = await tx<EndpointRow[]>`
        update callback_endpoints set previous_salt = secret_salt, secret_salt = ${salt},
          previous_salt_until = now() + make_interval(hours => ${ROTATION_OVERLAP_HOURS}), updated_at = now()
        where ${boundTenant(tx)} and id = ${id}::uuid
        returning ${tx.unsafe(COLUMNS)}`;
      if (row === undefined) throw noSuchEndpoint();
      await audit(tx, principal, 'webhook_endpoint.secret_rotated', row);
      return { endpoint: view(row), signing_secret: deriver.secret(row.id, salt) };
    },

    /** Turns a disabled endpoint back on: its run of failures starts again from zero. */
    async enable(tx: TenantSql, principal: Principal, id: string): Promise<CallbackEndpoint> {
      const before = await managedRow(tx, principal, id, true);
      const [row] = await tx<EndpointRow[]>`
        update callback_endpoints set state = 'enabled', disabled_reason = null, consecutive_failures = 0,
          updated_at = now()
        where ${boundTenant(tx)} and id = ${id}::uuid
        returning ${tx.unsafe(COLUMNS)}`;
      if (row === undefined) throw noSuchEndpoint();
      await audit(tx, principal, 'webhook_endpoint.enabled', row, {
        previous_state: before.state,
        ...(before.disabled_reason === null ? {} : { disabled_reason: before.disabled_reason }),
      });
      return view(row);
    },
  };
}

export type CallbackEndpoints = ReturnType<typeof createCallbackEndpoints>;

function distinct(types: readonly CallbackEventType[]): CallbackEventType[] {
  return [...new Set(types)];
}
