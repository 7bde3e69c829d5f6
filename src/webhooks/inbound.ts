import { randomBytes } from 'node:crypto';
import type { Sql } from 'postgres';
import { recordFor } from '../accounts/audit-events.ts';
import type { Principal } from '../accounts/service.ts';
import type { AgentsService } from '../agents/service.ts';
import { isUuid, type TenantSql, withTenant } from '../db/tenant.ts';
import { AppError } from '../errors.ts';
import { boundTenant } from '../http/page-cursor.ts';
import { enqueueJob } from '../jobs/queue.ts';
import { createSecretDeriver } from './derived-secrets.ts';
import { SignatureError, verifyWebhook, type WebhookHeaders } from './signature.ts';

// Inbound webhooks (RLY-11): an agent's managers create endpoints; an outside
// service POSTs Standard Webhooks-signed events to /hooks/:endpoint_id; each
// verified event is recorded once per webhook-id and delivered to the agent by
// the `inbound_webhook_deliver` job (inbound-delivery.ts).
//
// The secret at rest: none. An endpoint's `whsec_` secret is derived from the
// server's session key, the endpoint's id and its random salt
// (derived-secrets.ts); only the salt is stored. The vault's sealing does not
// fit: its tenant-key rotation re-encrypts `credentials` rows only, so a second
// sealed table would need changes to src/vault to rotate with it. The cost:
// replacing the session key changes every inbound secret (README).

export const INBOUND_DELIVER_TASK = 'inbound_webhook_deliver';
/** The largest body accepted on /hooks/:endpoint_id (bytes); over it: 413 before anything is read from the database. */
export const MAX_INBOUND_BODY_BYTES = 64 * 1024;
/** Tries per event, as for relay messages. */
export const INBOUND_DELIVER_ATTEMPTS = 6;
/** The most endpoints one agent may have. */
export const MAX_ENDPOINTS_PER_AGENT = 20;

export type InboundErrorCode = 'not_found' | 'webhook_unauthorized' | 'inbound_endpoint_limit';

const DERIVATION_LABEL = 'enclave.inbound-webhook.secret.v1';

export interface InboundEndpoint {
  readonly id: string;
  readonly agent_id: string;
  readonly description: string;
  readonly created_at: Date;
}

export type ReceiveResult = 'received' | 'already_received';

export interface InboundDeps {
  readonly sql: Sql;
  /** The server's session key: the inbound secrets are derived from it. */
  readonly sessionKey: string;
  readonly agents: Pick<AgentsService, 'authorizeOn'>;
  /** Unix seconds; the request's clock. */
  readonly now?: () => number;
}

export function createInboundWebhooks(deps: InboundDeps) {
  const derived = createSecretDeriver(deps.sessionKey, DERIVATION_LABEL);
  const now = deps.now ?? (() => Date.now() / 1000);
  const secretOf = derived.secret;
  // One answer for an unknown endpoint and a bad signature: the id alone says nothing.
  const unauthorized = (cause?: SignatureError) =>
    new AppError<InboundErrorCode>(
      'webhook_unauthorized',
      cause === undefined ? 'the webhook signature does not verify' : cause.message,
      cause === undefined ? undefined : { cause },
    );

  return {
    /** Creates an endpoint for `agentId`; its secret is in this answer only. */
    async create(
      tx: TenantSql,
      principal: Principal,
      agentId: string,
      description: string,
    ): Promise<InboundEndpoint & { secret: string }> {
      await deps.agents.authorizeOn(tx, principal, agentId, 'agent.manage');
      const [{ count } = { count: 0 }] = await tx<{ count: number }[]>`
        select count(*)::int as count from inbound_webhooks where ${boundTenant(tx)} and agent_id = ${agentId}::uuid`;
      if (count >= MAX_ENDPOINTS_PER_AGENT) {
        throw new AppError<InboundErrorCode>(
          'inbound_endpoint_limit',
          `an agent has at most ${MAX_ENDPOINTS_PER_AGENT} inbound endpoints`,
        );
      }
      const salt = randomBytes(16);
      const [row] = await tx<InboundEndpoint[]>`
        insert into inbound_webhooks (tenant_id, agent_id, description, secret_salt, created_by)
        values (${principal.user.tenant_id}::uuid, ${agentId}::uuid, ${description}, ${salt}, ${principal.user.id}::uuid)
        returning id, agent_id, description, created_at`;
      if (row === undefined) throw new AppError<InboundErrorCode>('not_found', 'the endpoint was not stored');
      await recordFor(tx, principal, {
        action: 'inbound_webhook.created',
        target: `inbound_webhook:${row.id}`,
        data: { endpoint_id: row.id, agent_id: agentId },
      });
      return { ...row, secret: secretOf(row.id, salt) };
    },

    async list(tx: TenantSql, principal: Principal, agentId: string): Promise<InboundEndpoint[]> {
      await deps.agents.authorizeOn(tx, principal, agentId, 'agent.manage');
      return tx<InboundEndpoint[]>`
        select id, agent_id, description, created_at from inbound_webhooks
        where ${boundTenant(tx)} and agent_id = ${agentId}::uuid order by created_at, id`;
    },

    async remove(tx: TenantSql, principal: Principal, agentId: string, endpointId: string): Promise<void> {
      await deps.agents.authorizeOn(tx, principal, agentId, 'agent.manage');
      const deleted = await tx`
        delete from inbound_webhooks
        where ${boundTenant(tx)} and agent_id = ${agentId}::uuid and id = ${endpointId}::uuid returning 1`;
      if (deleted.length === 0) {
        throw new AppError<InboundErrorCode>('not_found', 'no such inbound endpoint', {
          field: 'endpoint_id',
        });
      }
      await recordFor(tx, principal, {
        action: 'inbound_webhook.deleted',
        target: `inbound_webhook:${endpointId}`,
        data: { endpoint_id: endpointId, agent_id: agentId },
      });
    },

    /**
     * One POST to /hooks/:endpoint_id. The sender controls every header and byte: nothing is
     * written until the signature verifies under the endpoint's secret, and the one read
     * before that is the endpoint's row. Unknown endpoint, missing, malformed, stale or
     * wrong signature: all `webhook_unauthorized`.
     */
    async receive(endpointId: string, headers: WebhookHeaders, body: Buffer): Promise<ReceiveResult> {
      if (!isUuid(endpointId)) throw unauthorized();
      const [endpoint] = await deps.sql<{ tenant_id: string; agent_id: string; secret_salt: Buffer }[]>`
        select tenant_id, agent_id, secret_salt from enclave.inbound_webhook_endpoint(${endpointId}::uuid)`;
      if (endpoint === undefined) throw unauthorized();
      let webhookId: string;
      try {
        webhookId = verifyWebhook(headers, body, [secretOf(endpointId, endpoint.secret_salt)], {
          now: now(),
        }).id;
      } catch (error) {
        if (error instanceof SignatureError) throw unauthorized(error);
        throw error;
      }
      // Verified: the endpoint's tenant is the one this request speaks for.
      return withTenant(deps.sql, endpoint.tenant_id, async (tx) => {
        const [event] = await tx<{ id: string }[]>`
          insert into inbound_webhook_events (tenant_id, endpoint_id, webhook_id, body)
          values (${endpoint.tenant_id}::uuid, ${endpointId}::uuid, ${webhookId}, ${body.toString('utf8')})
          on conflict (endpoint_id, webhook_id) do nothing
          returning id`;
        if (event === undefined) return 'already_received';
        await enqueueInboundDelivery(tx, endpoint.tenant_id, endpoint.agent_id, event.id);
        return 'received';
      });
    },
  };
}

export type InboundWebhooks = ReturnType<typeof createInboundWebhooks>;

/** The delivery job of one event: keyed by the event, so enqueueing it again never doubles it. */
export async function enqueueInboundDelivery(
  tx: TenantSql,
  tenantId: string,
  agentId: string,
  eventId: string,
): Promise<void> {
  // One queue per agent: its events reach it in the order received.
  await enqueueJob(
    tx,
    INBOUND_DELIVER_TASK,
    { tenant_id: tenantId, event_id: eventId },
    {
      jobKey: `${INBOUND_DELIVER_TASK}:${eventId}`,
      queue: `inbound:${agentId}`,
      maxAttempts: INBOUND_DELIVER_ATTEMPTS,
    },
  );
}
