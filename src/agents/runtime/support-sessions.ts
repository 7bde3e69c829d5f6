import { appendAuditEvent } from '../../audit/append.ts';
import type { TenantSql } from '../../db/tenant.ts';

// AGT-5: the end of a support session, recorded once, whoever notices it
// first: the operator's CLI when its session ends, or the runtime when it
// cuts the session (support access turned off, the instance stopped). A
// session that is already ended is left as it is, so no end is recorded
// twice and none is lost when the CLI was killed.

export type SupportSessionEnd = 'closed' | 'support_access_off' | 'instance_stopped';

interface Ended {
  readonly id: string;
  readonly ms: number;
}

async function recordEnds(
  tx: TenantSql,
  tenantId: string,
  ended: readonly (Ended & { agent_id: string })[],
  actor: string,
  reason: SupportSessionEnd,
): Promise<void> {
  for (const session of ended) {
    await appendAuditEvent(tx, tenantId, {
      actor,
      action: 'support.session_ended',
      target: `agent:${session.agent_id}`,
      data: { session_id: session.id, duration_ms: session.ms, reason },
    });
  }
}

/** Ends one session, if it is still open, and records its end in the owner's audit log. */
export async function endSupportSession(
  tx: TenantSql,
  tenantId: string,
  end: { readonly sessionId: string; readonly actor: string; readonly reason: SupportSessionEnd },
): Promise<void> {
  const ended = await tx<(Ended & { agent_id: string })[]>`
    update support_sessions set ended_at = now()
    where id = ${end.sessionId}::uuid and ended_at is null
    returning id::text, agent_id::text, (extract(epoch from ended_at - started_at) * 1000)::int as ms`;
  await recordEnds(tx, tenantId, ended, end.actor, end.reason);
}

/** Ends every open session into an agent (the runtime cut them all) and records each end. */
export async function endOpenSupportSessions(
  tx: TenantSql,
  tenantId: string,
  agentId: string,
  reason: Exclude<SupportSessionEnd, 'closed'>,
): Promise<number> {
  const ended = await tx<(Ended & { agent_id: string })[]>`
    update support_sessions set ended_at = now()
    where agent_id = ${agentId}::uuid and ended_at is null
    returning id::text, agent_id::text, (extract(epoch from ended_at - started_at) * 1000)::int as ms`;
  await recordEnds(tx, tenantId, ended, 'system', reason);
  return ended.length;
}
