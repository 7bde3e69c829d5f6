import type { Sql } from 'postgres';
import type { TemplateCatalog } from '../agents/templates.ts';
import { isUuid, serviceQuery, type TenantSql } from '../db/tenant.ts';
import { AppError } from '../errors.ts';
import { boundTenant } from '../http/page-cursor.ts';
import type { Logger } from '../logger.ts';
import { createInstancePoster, type RelayDeliveryDeps } from '../relay/delivery.ts';
import { wrapUntrusted } from '../relay/envelope.ts';
import { enqueueInboundDelivery } from './inbound.ts';

// The `inbound_webhook_deliver` job (RLY-11): one verified inbound event,
// POSTed to the agent's running instance as relay messages are (same socket,
// header rules and relay_path, relay/delivery.ts's createInstancePoster):
//
//   POST <relay_path>, Idempotency-Key: <event id>
//   { "thread_id": null, "message_id": <event id>, "from": "enclave-webhook",
//     "endpoint_id", "webhook_id",
//     "text": the raw body inside the untrusted-content envelope (RLY-8) }
//
// Any 2xx marks it delivered (its body is not read as a reply: a webhook has
// no thread to answer in); 4xx/1xx/3xx → failed; 5xx, no connection or no
// answer in time → retried. A stopped instance leaves it queued; its start
// enqueues every queued event again (enqueueQueuedInboundEvents).

/** The envelope's `from` for an inbound webhook: `enclave-` names are reserved, so no agent has it. */
export const WEBHOOK_FROM = 'enclave-webhook';

export type InboundDeliveryErrorCode = 'inbound_delivery_payload_invalid';

export interface InboundDeliveryRequest {
  readonly thread_id: null;
  readonly message_id: string;
  readonly from: typeof WEBHOOK_FROM;
  readonly endpoint_id: string;
  readonly webhook_id: string;
  readonly text: string;
}

function payloadOf(value: unknown): { tenantId: string; eventId: string } {
  const payload = value as { tenant_id?: unknown; event_id?: unknown } | null;
  if (!isUuid(payload?.tenant_id) || !isUuid(payload.event_id)) {
    throw new AppError<InboundDeliveryErrorCode>(
      'inbound_delivery_payload_invalid',
      'inbound_webhook_deliver: the payload needs a tenant_id and an event_id (uuids)',
    );
  }
  return { tenantId: payload.tenant_id, eventId: payload.event_id };
}

export function createInboundDelivery(
  deps: Pick<RelayDeliveryDeps, 'instancesDir' | 'agentsDomain' | 'proto' | 'timeoutMs'> & {
    readonly sql: Sql;
    readonly templates: Pick<TemplateCatalog, 'get'>;
    readonly logger: Logger;
  },
) {
  const postToInstance = createInstancePoster(deps);
  const log = deps.logger.child({ component: 'inbound-webhook-delivery' });

  return {
    /** The `inbound_webhook_deliver` job. */
    async deliver(payload: unknown): Promise<void> {
      const { tenantId, eventId } = payloadOf(payload);
      const pending = await serviceQuery(
        deps.sql,
        { tenantId, reason: 'inbound webhook: deliver an event' },
        async (tx) => {
          const [row] = await tx<
            {
              endpoint_id: string;
              webhook_id: string;
              body: string;
              agent_id: string;
              template_id: string;
              instance_state: string | null;
              subdomain: string | null;
            }[]
          >`
            select e.endpoint_id, e.webhook_id, e.body, w.agent_id, a.template_id,
              i.state as instance_state, i.subdomain
            from inbound_webhook_events e
            join inbound_webhooks w on w.tenant_id = e.tenant_id and w.id = e.endpoint_id
            join agents a on a.tenant_id = w.tenant_id and a.id = w.agent_id
            left join agent_instances i on i.agent_id = w.agent_id
            where ${boundTenant(tx, tx`e.tenant_id`)} and e.id = ${eventId}::uuid and e.delivery = 'queued'
              and e.body is not null`;
          const template = row === undefined ? undefined : deps.templates.get(row.template_id);
          // Gone, already settled, or the instance is not running: it waits, queued, for its start.
          if (row?.instance_state !== 'running' || row.subdomain === null || template === undefined) return;
          return { ...row, subdomain: row.subdomain, relayPath: template.relayPath };
        },
      );
      if (pending === undefined) return;
      const request: InboundDeliveryRequest = {
        thread_id: null,
        message_id: eventId,
        from: WEBHOOK_FROM,
        endpoint_id: pending.endpoint_id,
        webhook_id: pending.webhook_id,
        text: wrapUntrusted(WEBHOOK_FROM, pending.body),
      };
      const outcome = await postToInstance(
        { agentId: pending.agent_id, subdomain: pending.subdomain, path: pending.relayPath },
        eventId,
        request,
      );
      const delivery = outcome.kind === 'ok' ? 'delivered' : 'failed';
      await serviceQuery(deps.sql, { tenantId, reason: 'inbound webhook: record a delivery' }, (tx) =>
        markEvent(tx, eventId, delivery),
      );
      if (outcome.kind === 'refused') {
        log.warn(
          { eventId, agentId: pending.agent_id, why: outcome.why },
          'inbound webhook refused by the agent',
        );
      }
    },
  };
}

export type InboundDelivery = ReturnType<typeof createInboundDelivery>;

async function markEvent(tx: TenantSql, eventId: string, delivery: 'delivered' | 'failed'): Promise<void> {
  await tx`
    update inbound_webhook_events
    set delivery = ${delivery}, delivered_at = case when ${delivery} = 'delivered' then now() else delivered_at end
    where ${boundTenant(tx)} and id = ${eventId}::uuid and delivery = 'queued'`;
}

/** Enqueues every queued event of `agentId`, in the order received; called when its instance starts. */
export async function enqueueQueuedInboundEvents(
  tx: TenantSql,
  tenantId: string,
  agentId: string,
): Promise<number> {
  const queued = await tx<{ id: string }[]>`
    select e.id from inbound_webhook_events e
    join inbound_webhooks w on w.tenant_id = e.tenant_id and w.id = e.endpoint_id
    where ${boundTenant(tx, tx`e.tenant_id`)} and w.agent_id = ${agentId}::uuid and e.delivery = 'queued'
    order by e.received_at, e.id`;
  for (const event of queued) await enqueueInboundDelivery(tx, tenantId, agentId, event.id);
  return queued.length;
}
