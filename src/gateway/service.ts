import { recordFor } from '../accounts/audit-events.ts';
import type { Principal } from '../accounts/service.ts';
import type { AgentsService } from '../agents/service.ts';
import type { TenantSql } from '../db/tenant.ts';
import { type ModelLimits, readLimits, readUsage, type UsageDay, writeLimits } from './records.ts';

// What other capabilities (the agent pages) use of the model gateway's
// records: an agent's usage and its limits, read and set in the caller's
// tenant transaction, with the same role checks as the API.

export type { Gateway, GatewayIdentity } from './gateway.ts';
export { MODEL_PROVIDERS, type ModelProvider, PROVIDER_LABELS } from './provider-names.ts';
export { type SandboxGateway, sandboxGateway } from './providers.ts';
export type { ModelLimits, UsageDay };

export const NO_LIMITS: ModelLimits = { requests_per_minute: null, tokens_per_day: null };

export interface ModelUsage {
  readonly usage: UsageDay[];
  readonly limits: ModelLimits;
}

/** The agent's usage over the last `days` UTC days and its limits, for whom may see its address and records. */
export async function modelUsage(
  tx: TenantSql,
  agents: Pick<AgentsService, 'authorizeOn'>,
  principal: Principal,
  agentId: string,
  days: number,
): Promise<ModelUsage> {
  await agents.authorizeOn(tx, principal, agentId, 'agent.address');
  const [usage, limits] = await Promise.all([readUsage(tx, agentId, days), readLimits(tx, agentId)]);
  return { usage, limits: limits ?? NO_LIMITS };
}

/** Sets the agent's limits (its managers only), recorded as agent.model_limits_set. */
export async function setModelLimits(
  tx: TenantSql,
  agents: Pick<AgentsService, 'authorizeOn'>,
  principal: Principal,
  agentId: string,
  limits: ModelLimits,
): Promise<ModelLimits> {
  await agents.authorizeOn(tx, principal, agentId, 'agent.manage');
  await writeLimits(tx, agentId, limits);
  await recordFor(tx, principal, {
    action: 'agent.model_limits_set',
    target: `agent:${agentId}`,
    data: { requests_per_minute: limits.requests_per_minute, tokens_per_day: limits.tokens_per_day },
  });
  return limits;
}
