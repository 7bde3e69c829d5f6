import { hostname } from 'node:os';
import type { Sql } from 'postgres';
import { type InviteMailPayload, markInviteMailed, mintInviteForMail } from '../accounts/invites.ts';
import { type LinkMailPayload, type LinkPurpose, mintLinkForMail } from '../accounts/links.ts';
import type { Lifecycle } from '../agents/runtime/lifecycle.ts';
import type { AuditServices } from '../audit/setup.ts';
import type { CallbackDeliverPayload, CallbackDelivery } from '../callbacks/deliver.ts';
import { fanoutCallbackEvent } from '../callbacks/fanout.ts';
import type { Mailer } from '../email/mailer.ts';
import {
  accountExistsMail,
  inviteMail,
  recoveryMail,
  signInCodeMail,
  verificationMail,
} from '../email/messages.ts';
import { AppError } from '../errors.ts';
import { POSTURE_CHECKS } from '../posture/runs.ts';
import { type PostureService, type PostureTaskName, postureTaskName } from '../posture/verifiers.ts';
import type { RelayDelivery } from '../relay/delivery.ts';
import { relayRetentionJob } from '../relay/retention.ts';
import { mintEmailCode, type SignInCodePayload } from '../signin/challenges.ts';
import type { InboundDelivery } from '../webhooks/inbound-delivery.ts';
import { releaseStaleLocks } from './stale-locks.ts';

// The task list: every durable side effect is one of these, enqueued with
// enqueueJob() in the same transaction as its cause (OPS-2). A task must be
// idempotent: a job may run again after a crash between its work and its
// completion.

/** Cron, hourly, and once after worker start: one OPS-5 verifier run each (src/posture/). */
type PostureTaskPayloads = { readonly [N in PostureTaskName]: Record<string, never> };

export interface TaskPayloads extends PostureTaskPayloads {
  /** Cron, every minute: records that this worker process is alive. */
  platform_heartbeat: Record<string, never>;
  /** Mints a one-time link for an email_tokens row and mails it to the pending address (ACC-7). */
  send_verification_email: LinkMailPayload;
  /** Mints a one-time recovery link and mails it to the account's address (ACC-7). */
  send_recovery_email: LinkMailPayload;
  /** Mints a member invite's token and mails the link to the invited address; records that it was mailed (ACC-1). */
  send_invite_email: InviteMailPayload;
  /** Tells an invited address that already has an account that no second one was made (ACC-1, no enumeration). */
  send_account_exists_email: { to: string };
  send_sign_in_code: SignInCodePayload;
  /** Cron, hourly: deletes expired rate-limit counters, old dev mail and old recovery requests. */
  maintenance_prune: Record<string, never>;
  /** Cron, hourly: deletes relay message payloads 30 days old, expired thread tokens and idempotency keys (RLY-9). */
  relay_retention: Record<string, never>;
  /** Cron, daily: moves audit events past the hot window to the archive, deletes segments past the cold window (AUD-7). */
  audit_retention: Record<string, never>;
  /** Brings one agent's instance to the state its owner wants (AGT-6); only the process that runs instances takes it. */
  agent_instance_sync: { tenant_id: string; agent_id: string; restart: boolean };
  /** Cron, every minute, and at worker start: enqueues a sync for every instance not in its wanted state. */
  agent_reconcile: Record<string, never>;
  /** Delivers one caller message of a relay thread to the target agent's instance (src/relay/threads.ts). */
  relay_deliver: { tenant_id: string; message_id: string };
  /** Delivers one verified inbound webhook event to its agent's instance (src/webhooks/inbound-delivery.ts). */
  inbound_webhook_deliver: { tenant_id: string; event_id: string };
  /** Creates the callback deliveries of one thread or connection event, on both sides of the relay (src/callbacks/fanout.ts). */
  callback_fanout: {
    tenant_id: string;
    event_id: string;
    type: string;
    occurred_at: string;
  } & ({ thread_id: string; message_id?: string } | { connection_id: string });
  /** One attempt of a callback delivery; the next one is scheduled by the job (src/callbacks/deliver.ts). */
  callback_deliver: CallbackDeliverPayload;
  /** Cron, every minute, and at worker start: frees bounded jobs a killed worker left locked (stale-locks.ts). */
  stale_lock_release: Record<string, never>;
}

/** Tasks only a worker that runs agent instances registers, so other workers never take them. */
export const RUNTIME_TASKS: readonly TaskName[] = [
  'agent_instance_sync',
  'agent_reconcile',
  'relay_deliver',
  'inbound_webhook_deliver',
];

export type TaskName = keyof TaskPayloads;

export interface TaskDeps {
  readonly sql: Sql;
  /** Identifies this process in worker_heartbeats. */
  readonly workerId: string;
  readonly startedAt: Date;
  readonly mailer: Pick<Mailer, 'send'>;
  /** Origin that links in mail point at (ENCLAVE_PUBLIC_URL). */
  readonly publicUrl: string;
  readonly audit: Pick<AuditServices, 'checkpoints' | 'retention'>;
  /** Present in the process that runs agent instances (`enclave start`). */
  readonly lifecycle: Pick<Lifecycle, 'sync' | 'reconcile'> | undefined;
  /** Present beside `lifecycle`: relay messages reach instances through this host's ingress sockets. */
  readonly relayDelivery?: Pick<RelayDelivery, 'deliver'> | undefined;
  /** Beside `relayDelivery`: inbound webhook events reach instances the same way. */
  readonly inboundDelivery?: Pick<InboundDelivery, 'deliver'> | undefined;
  /** Sends callbacks (RLY-7); any worker process, it needs no instance socket. */
  readonly callbackDelivery?: Pick<CallbackDelivery, 'deliver'> | undefined;
  /** Runs the OPS-5 verifiers and records their runs; absent, their tasks are not registered. */
  readonly posture?: Pick<PostureService, 'run'> | undefined;
  /** What time it is for jobs that act on age (relay_retention); the system clock when absent. */
  readonly clock?: () => Date;
}

export function defaultWorkerId(): string {
  return `${hostname()}:${process.pid}`;
}

async function recordHeartbeat(deps: TaskDeps): Promise<void> {
  await deps.sql.begin(async (tx) => {
    await tx`
      insert into worker_heartbeats (worker_id, started_at, seen_at)
      values (${deps.workerId}, ${deps.startedAt}, now())
      on conflict (worker_id) do update set seen_at = excluded.seen_at`;
    await tx`delete from worker_heartbeats where seen_at < now() - interval '1 day'`;
  });
}

/**
 * Mints the link and sends it. A send that throws fails the job, which
 * graphile-worker retries with backoff; the retry mints a fresh token, so
 * the link of a message that did leave the first time stops working.
 */
async function sendLinkMail(deps: TaskDeps, purpose: LinkPurpose, payload: unknown): Promise<void> {
  const link = await mintLinkForMail(deps.sql, purpose, payload);
  if (link === undefined) return;
  const mail =
    purpose === 'recover' ? recoveryMail(deps.publicUrl, link) : verificationMail(deps.publicUrl, link);
  await deps.mailer.send(mail);
}

/** As sendLinkMail; mailed_at is set only once the mailer took the message. */
async function sendInviteMail(deps: TaskDeps, payload: unknown): Promise<void> {
  const invite = await mintInviteForMail(deps.sql, payload);
  if (invite === undefined) return;
  await deps.mailer.send(inviteMail(deps.publicUrl, invite));
  await markInviteMailed(deps.sql, payload);
}

async function sendAccountExistsMail(deps: TaskDeps, payload: unknown): Promise<void> {
  // The payload is JSON read back from the job table: check it before mailing it.
  const { to } = (payload ?? {}) as { to?: unknown };
  if (typeof to !== 'string' || !to.includes('@')) {
    throw new Error('send_account_exists_email: the payload needs a `to` address');
  }
  await deps.mailer.send(accountExistsMail(deps.publicUrl, to));
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** ACC-8: mints the challenge's email code as it sends it; a challenge gone or passed sends nothing. */
async function sendSignInCode(deps: TaskDeps, payload: unknown): Promise<void> {
  const { tenantId, challengeId } = (payload ?? {}) as Partial<Record<keyof SignInCodePayload, unknown>>;
  if (
    typeof tenantId !== 'string' ||
    !UUID.test(tenantId) ||
    typeof challengeId !== 'string' ||
    !UUID.test(challengeId)
  ) {
    throw new Error('send_sign_in_code: the payload needs a tenantId and a challengeId');
  }
  const minted = await mintEmailCode(deps.sql, { tenantId, challengeId });
  if (minted !== undefined) await deps.mailer.send(signInCodeMail(minted));
}

export const OUTBOX_DAYS = 7;
export const RECOVERY_REQUEST_DAYS = 90;

async function prune(deps: TaskDeps): Promise<void> {
  await deps.sql.begin(async (tx) => {
    // rate-limiter-flexible stores expiry as milliseconds since the epoch.
    await tx`delete from rate_limits where expire < (extract(epoch from now()) * 1000)::bigint`;
    await tx`delete from dev_outbox where created_at < now() - make_interval(days => ${OUTBOX_DAYS})`;
    await tx`
      delete from recovery_requests where requested_at < now() - make_interval(days => ${RECOVERY_REQUEST_DAYS})`;
    await tx`delete from passkey_challenges where expires_at < now()`;
    // Provider sign-in flows live 10 minutes; a day later nobody can be mid-flow (ACC-9).
    await tx`delete from identity_flows where expires_at < now() - interval '1 day'`;
  });
}

function postureHandlers(posture: TaskDeps['posture']): TaskHandlers {
  if (posture === undefined) return {};
  return Object.fromEntries(
    POSTURE_CHECKS.map((check) => [
      postureTaskName(check),
      async () => {
        await posture.run(check);
      },
    ]),
  );
}

export type TaskHandlers = { readonly [N in TaskName]?: (payload: unknown) => Promise<void> };

export function createTaskHandlers(deps: TaskDeps): TaskHandlers {
  return {
    platform_heartbeat: () => recordHeartbeat(deps),
    send_verification_email: (payload) => sendLinkMail(deps, 'verify_email', payload),
    send_recovery_email: (payload) => sendLinkMail(deps, 'recover', payload),
    send_invite_email: (payload) => sendInviteMail(deps, payload),
    send_account_exists_email: (payload) => sendAccountExistsMail(deps, payload),
    send_sign_in_code: (payload) => sendSignInCode(deps, payload),
    maintenance_prune: () => prune(deps),
    relay_retention: () => relayRetentionJob(deps.sql, deps.clock?.() ?? new Date()),
    audit_retention: async () => {
      const { failedTenants } = await deps.audit.retention.runRetention();
      // Failing the job keeps it visible and retried; the other tenants' work is already done.
      if (failedTenants.length > 0) {
        throw new AppError(
          'retention_incomplete',
          `audit retention could not archive the events of ${failedTenants.length} tenant(s); see the errors logged`,
        );
      }
    },
    callback_fanout: (payload) => fanoutCallbackEvent(deps.sql, payload),
    stale_lock_release: async () => {
      await releaseStaleLocks(deps.sql);
    },
    ...postureHandlers(deps.posture),
    ...(deps.callbackDelivery === undefined
      ? {}
      : {
          callback_deliver: (payload: unknown) =>
            deps.callbackDelivery?.deliver(payload) ?? Promise.resolve(),
        }),
    ...(deps.lifecycle === undefined
      ? {}
      : {
          agent_instance_sync: (payload: unknown) => deps.lifecycle?.sync(payload) ?? Promise.resolve(),
          agent_reconcile: () => deps.lifecycle?.reconcile() ?? Promise.resolve(),
        }),
    ...(deps.relayDelivery === undefined
      ? {}
      : { relay_deliver: (payload: unknown) => deps.relayDelivery?.deliver(payload) ?? Promise.resolve() }),
    ...(deps.inboundDelivery === undefined
      ? {}
      : {
          inbound_webhook_deliver: (payload: unknown) =>
            deps.inboundDelivery?.deliver(payload) ?? Promise.resolve(),
        }),
  };
}
