import type { Sql } from 'postgres';
import { recordFor } from '../accounts/audit-events.ts';
import type { Principal } from '../accounts/service.ts';
import { appendAuditEvent } from '../audit/append.ts';
import { serviceQuery, type TenantSql } from '../db/tenant.ts';
import type { PublishAuthority } from './card-publication.ts';
import { RelayError } from './errors.ts';

// Directory listings (RLY-1): the agent's managers ask for one and withdraw
// it in their own tenant; the operator reviews the queue across tenants and
// approves or rejects (0020_relay_listings.sql says why reads go through
// SECURITY DEFINER functions and writes through serviceQuery). Every step
// that changes a listing is an audit event on the agent's tenant's chain, in
// the transaction that made it; asking for what is already so records nothing.

export type ListingState = 'pending' | 'approved' | 'rejected' | 'withdrawn';

/** A listing as its owner sees it. */
export interface Listing {
  readonly state: ListingState;
  /** The operator's reason, on a rejection (optional). */
  readonly reason: string | null;
  readonly requested_at: Date;
  readonly decided_at: Date | null;
  /** In the directory now: approved, the card published and unchanged since approval. */
  readonly listed: boolean;
  /** Approved, but the card's name, description or template changed since: waits for a new review. */
  readonly changed_since_approval: boolean;
}

/** A listing waiting in the operator's queue: 'new' (pending) or 'changed' (approved card since changed). */
export interface QueuedListing {
  readonly tenant_id: string;
  readonly agent_id: string;
  readonly handle: string;
  readonly name: string;
  readonly description: string;
  readonly template_id: string;
  readonly requested_at: Date;
  readonly review: 'new' | 'changed';
}

export type ListingDecision = 'approve' | 'reject';

export const MAX_REJECT_REASON = 500;
export const MAX_QUEUE = 200;

const FINGERPRINT = 'enclave.relay_card_fingerprint(a.name, a.description, a.template_id)';

/** The agent's listing, or undefined when none was ever asked for; `tx` is bound to the agent's tenant. */
export async function listingOf(tx: TenantSql, agentId: string): Promise<Listing | undefined> {
  const [listing] = await tx<Listing[]>`
    select l.state, l.reason, l.requested_at, l.decided_at,
           (l.state = 'approved' and a.card_published and l.approved_card = ${tx.unsafe(FINGERPRINT)}) as listed,
           (l.state = 'approved' and l.approved_card <> ${tx.unsafe(FINGERPRINT)}) as changed_since_approval
    from relay_listings l join agents a on a.id = l.agent_id
    where l.agent_id = ${agentId}::uuid`;
  return listing;
}

async function recordedListing(tx: TenantSql, agentId: string): Promise<Listing> {
  const listing = await listingOf(tx, agentId);
  // Written or found in this transaction: only a concurrent agent delete could lose it.
  if (listing === undefined) throw new RelayError('not_found', 'no such agent');
  return listing;
}

/**
 * Asks for the agent's directory listing: a new request, or again after a
 * rejection or a withdrawal. Pending or approved already: unchanged. The
 * card must be published (409 card_unpublished).
 */
export async function requestListing(
  tx: TenantSql,
  authority: PublishAuthority,
  principal: Principal,
  agentId: string,
): Promise<Listing> {
  await authority.authorizeOn(tx, principal, agentId, 'agent.manage');
  const [agent] = await tx<{ handle: string; card_published: boolean }[]>`
    select handle, card_published from agents where id = ${agentId}::uuid for share`;
  if (agent === undefined) throw new RelayError('not_found', 'no such agent');
  if (!agent.card_published) {
    throw new RelayError(
      'card_unpublished',
      'publish the agent’s card before asking for a directory listing',
    );
  }
  const changed = await tx`
    insert into relay_listings (tenant_id, agent_id)
    values (enclave.current_tenant_id(), ${agentId}::uuid)
    on conflict (tenant_id, agent_id) do update
      set state = 'pending', reason = null, requested_at = now(), decided_at = null
      where relay_listings.state in ('rejected', 'withdrawn')
    returning agent_id`;
  if (changed.length > 0) {
    await recordFor(tx, principal, {
      action: 'agent.listing_requested',
      target: `agent:${agentId}`,
      data: { handle: agent.handle },
    });
  }
  return recordedListing(tx, agentId);
}

/** Takes the listing back (out of the queue or the directory); 409 listing_state when there is none. */
export async function withdrawListing(
  tx: TenantSql,
  authority: PublishAuthority,
  principal: Principal,
  agentId: string,
): Promise<Listing> {
  await authority.authorizeOn(tx, principal, agentId, 'agent.manage');
  const changed = await tx<{ handle: string }[]>`
    update relay_listings l set state = 'withdrawn', decided_at = now(), listed_at = null, approved_card = null
    from agents a
    where l.agent_id = ${agentId}::uuid and a.id = l.agent_id and l.state in ('pending', 'approved')
    returning a.handle`;
  const [withdrawn] = changed;
  if (withdrawn !== undefined) {
    await recordFor(tx, principal, {
      action: 'agent.listing_withdrawn',
      target: `agent:${agentId}`,
      data: { handle: withdrawn.handle },
    });
  }
  const listing = await listingOf(tx, agentId);
  if (listing === undefined) throw new RelayError('listing_state', 'this agent has no directory listing');
  return listing;
}

/** The operator's queue, oldest request first. The caller decides who is the operator. */
export async function listingQueue(sql: Sql, limit = MAX_QUEUE): Promise<QueuedListing[]> {
  return sql<QueuedListing[]>`
    select tenant_id, agent_id, handle, name, description, template_id, requested_at, review
    from enclave.relay_listing_queue(null, ${limit}::int4)`;
}

export interface ListingVerdict {
  readonly handle: string;
  readonly decision: ListingDecision;
  /** Shown to the owner on a rejection; refused on an approval. */
  readonly reason?: string | undefined;
  /** The audit actor: `operator:cli`, or the operator's `user:<id>`. */
  readonly actor: string;
}

/**
 * Approves or rejects the listing of the agent with this handle, if it waits
 * in the queue (404 otherwise), in the agent's tenant (serviceQuery), with
 * the decision as an audit event on its chain.
 */
export async function decideListing(sql: Sql, verdict: ListingVerdict): Promise<QueuedListing> {
  const { handle, decision, actor } = verdict;
  const reason = verdict.reason?.trim() || null;
  if (decision === 'approve' && reason !== null) {
    throw new RelayError('validation_failed', 'a reason goes with a rejection only', 'reason');
  }
  if (reason !== null && reason.length > MAX_REJECT_REASON) {
    throw new RelayError('validation_failed', `is longer than ${MAX_REJECT_REASON} characters`, 'reason');
  }
  // handle is operator input (or a form field): only ever a bound parameter, compared for equality.
  const [queued] = await sql<QueuedListing[]>`
    select tenant_id, agent_id, handle, name, description, template_id, requested_at, review
    from enclave.relay_listing_queue(${handle}, 1)`;
  if (queued === undefined) throw new RelayError('not_found', 'no listing of this handle awaits review');
  const decided = await serviceQuery(
    sql,
    { tenantId: queued.tenant_id, reason: `relay: listing review (${decision})` },
    async (tx) => {
      // The queue's read was outside this transaction: the same conditions again, under the tenant's policy.
      const rows = await tx`
        update relay_listings l
        set state = ${decision === 'approve' ? 'approved' : 'rejected'}, reason = ${reason},
            decided_at = now(),
            listed_at = case when ${decision === 'approve'} then now() end,
            approved_card = case when ${decision === 'approve'} then ${tx.unsafe(FINGERPRINT)} end
        from agents a
        where l.agent_id = ${queued.agent_id}::uuid and a.id = l.agent_id and a.card_published
          and (l.state = 'pending' or (l.state = 'approved' and l.approved_card <> ${tx.unsafe(FINGERPRINT)}))
        returning l.agent_id`;
      if (rows.length === 0) return false;
      await appendAuditEvent(tx, queued.tenant_id, {
        actor,
        action: decision === 'approve' ? 'agent.listing_approved' : 'agent.listing_rejected',
        target: `agent:${queued.agent_id}`,
        data: reason === null ? { handle } : { handle, reason },
      });
      return true;
    },
  );
  if (!decided) throw new RelayError('not_found', 'no listing of this handle awaits review');
  return queued;
}
