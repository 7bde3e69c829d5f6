import type { Sql } from 'postgres';
import { principalActor } from '../accounts/audit-events.ts';
import { authorize } from '../accounts/roles.ts';
import type { Principal } from '../accounts/service.ts';
import { type AuditEventInput, appendAuditEvent } from '../audit/append.ts';
import { canonicalEventParts } from '../audit/event.ts';
import { emitConnectionEvent } from '../callbacks/events.ts';
import { withLookup } from '../db/lookup.ts';
import type { TenantSql } from '../db/tenant.ts';
import {
  afterPosition,
  boundTenant,
  type PageRequest,
  type PositionedRow,
  positionColumns,
} from '../http/page-cursor.ts';
import type { RateLimits } from '../http/rate-limits.ts';
import { hashToken, mintToken, tokenKind } from '../tokens.ts';
import { RelayError } from './errors.ts';
import { revokeConnectionThreads } from './threads.ts';

// Connections (RLY-2) and the relay token's one claim (RLY-3). A connection
// has a row in each tenant it joins (migration 0017): `incoming` in the
// target's, `outgoing` in the requester's. Reads see the caller's own row
// under its tenant policy; every write goes through one of the migration's
// definer functions, which keep the two rows in step. Each step is an audit
// event on both tenants' chains, in the transaction of the step.
//
// Terms: the *requester* asks (a user, for one of their agents or for
// themselves); the *target* is the published agent asked for, and its
// tenant's owners, admins and creator decide.

export type Direction = 'incoming' | 'outgoing';
export type ConnectionState = 'pending' | 'approved' | 'denied' | 'revoked';
export type Decision = 'approve' | 'deny' | 'revoke';

export const MAX_CONNECTION_MESSAGE = 2000;

/** A connection as its side sees it. Ids of the other tenant (its tenant, user, agent) never appear. */
export interface Connection {
  readonly id: string;
  readonly direction: Direction;
  readonly state: ConnectionState;
  readonly target_handle: string;
  /** The requesting agent's handle; null when a person asked for themselves. */
  readonly requester_handle: string | null;
  /** This side's agent: the target (incoming), or the requesting agent (outgoing, null for a person). */
  readonly agent_id: string | null;
  readonly message: string;
  readonly token_claimed: boolean;
  readonly created_at: Date;
  readonly decided_at: Date | null;
  readonly revoked_at: Date | null;
}

export interface ConnectionRequest {
  readonly handle: string;
  /** One of the caller's agents to connect; null: the caller, as a person. */
  readonly agentId: string | null;
  readonly message: string;
}

/** What the data plane gets for a good relay token: who may reach which agent, over which connection. */
export interface RelayGrant {
  readonly connectionId: string;
  readonly targetTenantId: string;
  readonly targetAgentId: string;
  readonly targetHandle: string;
  readonly requesterTenantId: string;
  readonly requesterUserId: string;
  readonly requesterHandle: string | null;
}

const COLUMNS =
  'id, side as direction, state, target_handle, requester_handle, agent_id, message, ' +
  'token_claimed_at is not null as token_claimed, created_at, decided_at, revoked_at';

const DECIDED: Readonly<Record<Decision, Exclude<ConnectionState, 'pending'>>> = {
  approve: 'approved',
  deny: 'denied',
  revoke: 'revoked',
};

/** One answer for every handle the caller may not connect to, so none can be told from another. */
const noSuchAgent = () => new RelayError('not_found', 'no such agent');
const noSuchConnection = () => new RelayError('not_found', 'no such connection');

/** What is wrong with a request that needs no database, by field; undefined when none. */
export function connectionRequestProblem(input: ConnectionRequest): RelayError | undefined {
  const message = input.message.trim();
  if (message.length === 0) return new RelayError('validation_failed', 'must not be empty', 'message');
  if (input.message.length > MAX_CONNECTION_MESSAGE) {
    return new RelayError(
      'validation_failed',
      `must be at most ${MAX_CONNECTION_MESSAGE} characters`,
      'message',
    );
  }
  return undefined;
}

/**
 * Appends `event` to the chains of both sides of connection `id`: ours, and
 * through relay_audit_append_peer the other's. In tenant-id order, so two
 * transactions of the same two tenants lock their audit heads in one order.
 */
async function recordOnBothChains(
  tx: TenantSql,
  principal: Principal,
  connection: { id: string; peerTenantId: string },
  event: Omit<AuditEventInput, 'actor'>,
): Promise<void> {
  const own = principal.user.tenant_id;
  const full = { actor: principalActor(principal), ...event };
  const appendOwn = () => appendAuditEvent(tx, own, full);
  const appendPeer = async () => {
    const parts = canonicalEventParts({ tenant: connection.peerTenantId, ...full });
    await tx`select seq from enclave.relay_audit_append_peer(
      ${connection.id}::uuid, ${parts.beforeSeq}, ${parts.beforeTs}, ${parts.afterTs})`;
  };
  if (own < connection.peerTenantId) {
    await appendOwn();
    await appendPeer();
  } else {
    await appendPeer();
    await appendOwn();
  }
}

interface OwnRow extends Connection {
  readonly peer_tenant_id: string;
  readonly requester_user_id: string;
  /** The creator of this side's agent (members decide only on their own agents'). */
  readonly agent_created_by: string | null;
}

async function ownRow(tx: TenantSql, id: string): Promise<OwnRow | undefined> {
  const [row] = await tx<OwnRow[]>`
    select ${tx.unsafe(COLUMNS)}, peer_tenant_id, requester_user_id,
           (select a.created_by from agents a where a.id = relay_connections.agent_id) as agent_created_by
    from relay_connections where id = ${id}::uuid and ${boundTenant(tx)}`;
  return row;
}

function view(row: OwnRow): Connection {
  const { peer_tenant_id: _peer, requester_user_id: _user, agent_created_by: _creator, ...connection } = row;
  return connection;
}

export async function requestConnection(
  tx: TenantSql,
  principal: Principal,
  input: ConnectionRequest,
): Promise<Connection> {
  const problem = connectionRequestProblem(input);
  if (problem !== undefined) throw problem;
  if (input.agentId !== null) {
    const [agent] = await tx<{ handle: string; created_by: string | null }[]>`
      select handle, created_by from agents where id = ${input.agentId}::uuid and ${boundTenant(tx)}`;
    if (agent === undefined) {
      throw new RelayError('validation_failed', 'is not an agent of your tenant', 'agent_id');
    }
    // Acting for an agent is managing it: members act only for the agents they created.
    authorize(principal, 'agent.manage', agent.created_by);
    if (agent.handle === input.handle) {
      throw new RelayError(
        'validation_failed',
        'is the agent asking: an agent cannot connect to itself',
        'handle',
      );
    }
  }
  // handle is attacker-controlled: it is only ever a bound parameter, and every refusal is the same 404.
  type Outcome = { outcome: string; connection_id: string; target_tenant_id: string };
  const [created] = await tx
    .savepoint(
      (sp) => sp<Outcome[]>`
        select outcome, connection_id, target_tenant_id from enclave.relay_connection_request(
          ${input.handle}, ${principal.user.id}::uuid, ${input.agentId}::uuid, ${input.message})`,
    )
    .catch((error: { code?: string; constraint_name?: string }): Outcome[] => {
      // Two identical requests at once: the second meets the first's row in relay_connections_open.
      if (error.code === '23505' && error.constraint_name === 'relay_connections_open') {
        return [{ outcome: 'exists', connection_id: '', target_tenant_id: '' }];
      }
      throw error;
    });
  if (created?.outcome === 'exists') {
    throw new RelayError('connection_exists', 'you already have an open connection request to this agent');
  }
  if (created?.outcome !== 'created') throw noSuchAgent();
  const connection = { id: created.connection_id, peerTenantId: created.target_tenant_id };
  const row = await ownRow(tx, connection.id);
  if (row === undefined) throw noSuchConnection();
  await recordOnBothChains(tx, principal, connection, {
    action: 'relay.connection_requested',
    target: `connection:${connection.id}`,
    data: {
      connection_id: connection.id,
      target_handle: row.target_handle,
      requester_handle: row.requester_handle,
    },
  });
  return view(row);
}

/** A page of one direction's connections, newest first, keyed by (created_at, id). */
export const listConnections = (
  tx: TenantSql,
  direction: Direction,
  page: PageRequest,
): Promise<(Connection & PositionedRow)[]> =>
  tx<(Connection & PositionedRow)[]>`
    select ${tx.unsafe(COLUMNS)}, ${positionColumns(tx, 'created_at')} from relay_connections
    where ${boundTenant(tx)} and side = ${direction} ${afterPosition(tx, 'created_at', 'desc', page.after)}
    order by created_at desc, id desc limit ${page.limit + 1}::int4`;

export async function getConnection(tx: TenantSql, id: string): Promise<Connection> {
  const row = await ownRow(tx, id);
  if (row === undefined) throw noSuchConnection();
  return view(row);
}

async function decidableRow(tx: TenantSql, principal: Principal, id: string): Promise<OwnRow> {
  const row = await ownRow(tx, id);
  if (row === undefined) throw noSuchConnection();
  if (row.direction !== 'incoming') {
    throw new RelayError(
      'forbidden',
      "Only the target agent's side approves, denies or revokes a connection; this one is your request.",
    );
  }
  authorize(principal, 'relay.approve', row.agent_created_by);
  return row;
}

/** The connection, if the principal may decide on it (its target's side, and relay.approve on its agent); else throws. */
export async function decidableConnection(
  tx: TenantSql,
  principal: Principal,
  id: string,
): Promise<Connection> {
  return view(await decidableRow(tx, principal, id));
}

/** Approve, deny or revoke, from the target's side (RLY-2). */
export async function decideConnection(
  tx: TenantSql,
  principal: Principal,
  id: string,
  decision: Decision,
): Promise<Connection> {
  const row = await decidableRow(tx, principal, id);
  const [result] = await tx<{ outcome: string; state: ConnectionState }[]>`
    select outcome, state from enclave.relay_connection_decide(${id}::uuid, ${DECIDED[decision]})`;
  if (result?.outcome === 'state') {
    throw new RelayError(
      'connection_state',
      `the connection is ${result.state}: it cannot be ${DECIDED[decision]} now`,
    );
  }
  if (result?.outcome !== 'ok') throw noSuchConnection();
  let threadsRevoked = 0;
  if (decision === 'revoke') {
    threadsRevoked = await revokeConnectionThreads(tx, id);
    // Callbacks (RLY-7): one event of the connection itself, open threads or not; the target's side decides.
    await emitConnectionEvent(tx, principal.user.tenant_id, { type: 'connection.revoked', connectionId: id });
  }
  await recordOnBothChains(
    tx,
    principal,
    { id, peerTenantId: row.peer_tenant_id },
    {
      action: `relay.connection_${DECIDED[decision]}`,
      target: `connection:${id}`,
      data: {
        connection_id: id,
        target_handle: row.target_handle,
        previous_state: row.state,
        ...(decision === 'revoke' ? { threads_revoked: threadsRevoked } : {}),
      },
    },
  );
  return getConnection(tx, id);
}

/**
 * The requester's one claim of the relay token (RLY-3), once approved. The
 * token is returned here only; its SHA-256 alone is stored.
 */
export async function claimRelayToken(
  tx: TenantSql,
  principal: Principal,
  id: string,
): Promise<{ token: string; connection: Connection }> {
  const row = await ownRow(tx, id);
  // Before approval (and from the target's side) the same answer as an unknown id.
  if (row === undefined || row.direction !== 'outgoing') throw noSuchConnection();
  const minted = mintToken('relay');
  const [result] = await tx<{ outcome: string }[]>`
    select outcome from enclave.relay_connection_claim(
      ${id}::uuid, ${principal.user.id}::uuid, ${minted.hash.toString('hex')})`;
  minted.hash.fill(0);
  if (result?.outcome === 'claimed') {
    throw new RelayError('relay_token_claimed', 'the relay token of this connection was already claimed');
  }
  if (result?.outcome === 'not_requester') {
    throw new RelayError('forbidden', 'Only the person who asked for the connection claims its relay token.');
  }
  if (result?.outcome !== 'ok') throw noSuchConnection();
  await recordOnBothChains(
    tx,
    principal,
    { id, peerTenantId: row.peer_tenant_id },
    {
      action: 'relay.token_claimed',
      target: `connection:${id}`,
      data: { connection_id: id, target_handle: row.target_handle, last4: minted.last4 },
    },
  );
  return { token: minted.token, connection: await getConnection(tx, id) };
}

/**
 * The grant a relay token stands for, or undefined: a token that is not a
 * relay token, unknown, or of a connection that is not approved (pending,
 * denied, revoked) resolves to nothing (fail closed). The token is
 * attacker-controlled: it is only hashed, and the hash is a bound parameter.
 */
export async function resolveRelayToken(sql: Sql, token: string): Promise<RelayGrant | undefined> {
  if (tokenKind(token) !== 'relay') return undefined;
  const hash = hashToken(token).toString('hex');
  const [row] = await withLookup(
    sql,
    hash,
    (tx) => tx<RelayGrant[]>`
      select id as "connectionId", tenant_id as "targetTenantId", agent_id as "targetAgentId",
             target_handle as "targetHandle", peer_tenant_id as "requesterTenantId",
             requester_user_id as "requesterUserId", requester_handle as "requesterHandle"
      from relay_connections
      where relay_token_hash = ${hash} and side = 'incoming' and state = 'approved'`,
  );
  return row;
}

/**
 * RLY-5: a connection request spends a point of the asker's bucket and one of
 * their client address's, before any lookup, so neither a user nor an address
 * can flood other tenants' owners with requests (429 with Retry-After).
 */
export async function spendConnectPoints(
  rateLimits: Pick<RateLimits, 'consume'>,
  userId: string,
  clientAddress: string,
): Promise<void> {
  await rateLimits.consume('relay_connect_user', userId);
  await rateLimits.consume('relay_connect_ip', clientAddress);
}
