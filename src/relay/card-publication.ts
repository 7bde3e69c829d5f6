import type { Sql } from 'postgres';
import { recordFor } from '../accounts/audit-events.ts';
import type { Principal } from '../accounts/service.ts';
import { AgentsError } from '../agents/errors.ts';
import { type TenantSql, withTenant } from '../db/tenant.ts';
import type { CardAgent } from './cards.ts';

// Whether an agent's card is public (RLY-1), and finding a published one by
// its handle. Publishing is off by default (agents.card_published, 0016);
// the agent's managers (roles.ts 'agent.manage') turn it on and off, and
// each change is an audit event in the same transaction. Nothing here is
// cached: an unpublished card is gone with the transaction that said so.

/** Who may publish: the agents service's check (not_found for an unknown agent, forbidden for the role). */
export interface PublishAuthority {
  authorizeOn(tx: TenantSql, principal: Principal, id: string, action: 'agent.manage'): Promise<void>;
}

const CARD_COLUMNS = 'handle, name, description, template_id as template, updated_at';

/**
 * Publishes or unpublishes the agent's card; the agent as a card shows it.
 * Asking for the state it already has changes nothing and records nothing.
 */
export async function setCardPublished(
  tx: TenantSql,
  authority: PublishAuthority,
  principal: Principal,
  agentId: string,
  published: boolean,
): Promise<CardAgent> {
  await authority.authorizeOn(tx, principal, agentId, 'agent.manage');
  const [changed] = await tx<CardAgent[]>`
    update agents set card_published = ${published}
    where id = ${agentId}::uuid and card_published is distinct from ${published}
    returning ${tx.unsafe(CARD_COLUMNS)}`;
  if (changed !== undefined) {
    await recordFor(tx, principal, {
      action: published ? 'agent.card_published' : 'agent.card_unpublished',
      target: `agent:${agentId}`,
      data: { handle: changed.handle },
    });
    return changed;
  }
  const [agent] = await tx<CardAgent[]>`
    select ${tx.unsafe(CARD_COLUMNS)} from agents where id = ${agentId}::uuid`;
  // authorizeOn found it in this transaction: only a concurrent delete could lose it.
  if (agent === undefined) throw new AgentsError('not_found', 'no such agent');
  return agent;
}

/**
 * The published agent with this handle, read in its own tenant's
 * transaction; undefined for an unknown handle and an unpublished agent alike.
 */
export async function findPublishedAgent(sql: Sql, handle: string): Promise<CardAgent | undefined> {
  // handle is attacker-controlled: it is only ever a bound parameter, compared for equality.
  const [found] = await sql<{ tenant_id: string; agent_id: string }[]>`
    select tenant_id, agent_id from enclave.relay_published_agent(${handle})`;
  if (found === undefined) return undefined;
  return withTenant(sql, found.tenant_id, async (tx) => {
    // Still published, read under the tenant's policies: an unpublish in between wins.
    const [agent] = await tx<CardAgent[]>`
      select ${tx.unsafe(CARD_COLUMNS)} from agents
      where id = ${found.agent_id}::uuid and card_published`;
    return agent;
  });
}
