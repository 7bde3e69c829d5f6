import type { Sql } from 'postgres';
import { withLookup } from '../db/lookup.ts';
import type { TenantSql } from '../db/tenant.ts';
import { hashToken, mintToken, tokenKind } from '../tokens.ts';

// AGT-1: each agent's own identity, a bearer token enc_agent_…. A new one is
// minted each time the agent's instance starts and handed only to that
// instance; only its SHA-256 is stored, so minting again revokes the last.

export interface AgentIdentity {
  readonly agentId: string;
  readonly tenantId: string;
  readonly handle: string;
}

/** Mints the agent's identity token, replacing any earlier one. The plaintext goes to the runtime only. */
export async function mintAgentIdentity(tx: TenantSql, agentId: string): Promise<string | undefined> {
  const minted = mintToken('agent');
  const updated = await tx`
    update agents set identity_token_hash = ${minted.hash.toString('hex')}
    where id = ${agentId}::uuid returning id`;
  return updated.length === 0 ? undefined : minted.token;
}

/** The agent a presented identity token belongs to, or undefined. The token is attacker-controlled. */
export async function resolveAgentIdentity(sql: Sql, token: string): Promise<AgentIdentity | undefined> {
  if (tokenKind(token) !== 'agent') return undefined;
  const hash = hashToken(token).toString('hex');
  return withLookup(sql, hash, async (tx) => {
    const [row] = await tx<{ id: string; tenant_id: string; handle: string }[]>`
      select id, tenant_id, handle from agents where identity_token_hash = ${hash}`;
    if (row === undefined) return undefined;
    return { agentId: row.id, tenantId: row.tenant_id, handle: row.handle };
  });
}
