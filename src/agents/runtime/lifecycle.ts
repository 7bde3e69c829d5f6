import type { Sql } from 'postgres';
import { appendAuditEvent } from '../../audit/append.ts';
import { serviceQuery, type TenantSql } from '../../db/tenant.ts';
import type { Logger } from '../../logger.ts';
import { enqueueQueuedDeliveries } from '../../relay/delivery.ts';
import type { Vault } from '../../vault/service.ts';
import { enqueueQueuedInboundEvents } from '../../webhooks/inbound-delivery.ts';
import { mintAgentIdentity } from '../identity.ts';
import type { TemplateCatalog } from '../templates.ts';
import type { InstanceExit, InstanceSpec, RuntimeDriver } from './driver.ts';
import { enqueueInstanceSync } from './instances.ts';
import { endOpenSupportSessions } from './support-sessions.ts';

// The worker side of AGT-6: bring each instance to the state its owner wants.
// A sync job reads the wish, starts or stops the instance through the
// driver and records the outcome. A crash is recorded and, while the agent
// should run, retried with exponential backoff up to MAX_CRASHES; then it
// stays crashed with the reason shown. After a restart of this process the
// reconcile job finds every instance that should run and starts it again.

/** Consecutive crashes after which an instance is left crashed. */
export const MAX_CRASHES = 5;
/** An instance that ran at least this long before crashing starts a fresh count. */
const STABLE_MS = 60_000;
const MAX_BACKOFF_MS = 60_000;
const BACKOFF_BASE_MS = 1000;

export interface SyncPayload {
  readonly tenant_id: string;
  readonly agent_id: string;
  readonly restart: boolean;
}

interface AgentRow {
  readonly id: string;
  readonly handle: string;
  readonly template_id: string;
  readonly support_access: boolean;
  readonly egress_allowlist: string[] | null;
  readonly desired_state: 'running' | 'stopped';
  readonly crashes: number;
}

export interface LifecycleDeps {
  readonly sql: Sql;
  readonly driver: RuntimeDriver;
  readonly templates: TemplateCatalog;
  readonly vault: Pick<Vault, 'lendCredential'>;
  /** The operator's support public key (OpenSSH line), offered to instances whose owner allows support. */
  readonly supportKey: string;
  readonly logger: Logger;
  /** The first restart's delay; each further one doubles it (default 1 s). */
  readonly backoffBaseMs?: number;
}

/** 1 s, 2 s, 4 s … after the 1st, 2nd, 3rd crash, at most a minute. */
export function backoffMs(crashes: number, baseMs = BACKOFF_BASE_MS): number {
  return Math.min(MAX_BACKOFF_MS, baseMs * 2 ** Math.max(0, crashes - 1));
}

function isSyncPayload(value: unknown): value is SyncPayload {
  const payload = value as Partial<SyncPayload> | null;
  return (
    typeof payload?.tenant_id === 'string' &&
    typeof payload.agent_id === 'string' &&
    typeof payload.restart === 'boolean'
  );
}

async function setState(
  tx: TenantSql,
  agentId: string,
  state: string,
  reason: string | null,
  extra: { started?: boolean; crashes?: number } = {},
): Promise<void> {
  await tx`
    update agent_instances
    set state = ${state}, state_reason = ${reason}, updated_at = now(),
        started_at = case when ${extra.started === true} then now() else started_at end,
        crashes = coalesce(${extra.crashes ?? null}::int, crashes)
    where agent_id = ${agentId}::uuid`;
}

export function createLifecycle(deps: LifecycleDeps) {
  const { sql, driver, templates, logger } = deps;
  const log = logger.child({ component: 'runtime' });

  /** Reads the agent and, to start it, everything its instance needs: one tenant transaction, recorded (TEN-5). */
  async function prepare(tenantId: string, agentId: string, starting: boolean) {
    return serviceQuery(sql, { tenantId, reason: 'runtime: sync an agent instance' }, async (tx) => {
      const [agent] = await tx<AgentRow[]>`
        select a.id, a.handle, a.template_id, a.support_access, a.egress_allowlist, i.desired_state, i.crashes
        from agents a join agent_instances i on i.agent_id = a.id
        where a.id = ${agentId}::uuid`;
      if (agent === undefined || !starting || agent.desired_state !== 'running')
        return { agent, spec: undefined };
      const template = templates.get(agent.template_id);
      if (template === undefined) {
        await setState(
          tx,
          agentId,
          'crashed',
          `template "${agent.template_id}" is not installed on this platform`,
        );
        return { agent, spec: undefined };
      }
      const secrets = new Map<string, Buffer>();
      try {
        const token = await mintAgentIdentity(tx, agentId);
        if (token !== undefined) secrets.set('ENCLAVE_AGENT_TOKEN', Buffer.from(token, 'utf8'));
        const stored = new Set(
          (await tx<{ name: string }[]>`select name from credentials where agent_id = ${agentId}::uuid`).map(
            (row) => row.name,
          ),
        );
        // Keys the model gateway uses stay out of the agent (provider credentials have no env).
        for (const credential of template.credentials) {
          if (credential.env === undefined || !stored.has(credential.name)) continue;
          const copy = await deps.vault.lendCredential(
            tx,
            { tenantId, agentId, name: credential.name },
            (plaintext) => Buffer.from(plaintext),
          );
          secrets.set(credential.env, copy);
        }
        await setState(tx, agentId, 'starting', null);
      } catch (error) {
        for (const value of secrets.values()) value.fill(0);
        throw error;
      }
      const spec: InstanceSpec = {
        agentId,
        tenantId,
        command: template.command,
        templateDir: template.dir,
        port: template.port,
        limits: template.limits,
        egress: { tenantId, agentId, allowlist: agent.egress_allowlist ?? undefined },
        modelGateway: template.modelGateway,
        env: { ENCLAVE_AGENT_ID: agentId, ENCLAVE_AGENT_HANDLE: agent.handle },
        secrets,
        supportKey: agent.support_access ? deps.supportKey : undefined,
      };
      return { agent, spec };
    });
  }

  async function record(tenantId: string, fn: (tx: TenantSql) => Promise<void>): Promise<void> {
    await serviceQuery(sql, { tenantId, reason: 'runtime: record an instance state' }, fn);
  }

  async function start(tenantId: string, agentId: string, spec: InstanceSpec): Promise<void> {
    try {
      await driver.start(spec);
    } catch (error) {
      const reason = error instanceof Error ? error.message : 'did not start';
      await crashed({ agentId, reason }, tenantId, false);
      return;
    } finally {
      for (const value of spec.secrets.values()) value.fill(0);
    }
    await record(tenantId, async (tx) => {
      await setState(tx, agentId, 'running', null, { started: true });
      // Relay messages that waited while it was stopped go now, committed with the state that lets them.
      await enqueueQueuedDeliveries(tx, tenantId, agentId);
      await enqueueQueuedInboundEvents(tx, tenantId, agentId);
      await appendAuditEvent(tx, tenantId, {
        actor: 'system',
        action: 'agent.started',
        target: `agent:${agentId}`,
        data: { support_access: spec.supportKey !== undefined },
      });
    });
  }

  async function stop(tenantId: string, agentId: string, reason: string | null): Promise<void> {
    await record(tenantId, (tx) => setState(tx, agentId, 'stopping', null));
    await driver.stop(agentId);
    await record(tenantId, async (tx) => {
      await setState(tx, agentId, 'stopped', reason);
      await endOpenSupportSessions(tx, tenantId, agentId, 'instance_stopped');
      await appendAuditEvent(tx, tenantId, {
        actor: 'system',
        action: 'agent.stopped',
        target: `agent:${agentId}`,
        data: {},
      });
    });
  }

  /** Records a crash and schedules the next attempt while restarts remain. */
  async function crashed(exit: InstanceExit, tenantId: string, wasRunning: boolean): Promise<void> {
    const status = driver.status(exit.agentId);
    const ranLong =
      wasRunning && status.startedAt !== undefined && Date.now() - status.startedAt.getTime() >= STABLE_MS;
    await record(tenantId, async (tx) => {
      const [row] = await tx<{ crashes: number; desired_state: string }[]>`
        select crashes, desired_state from agent_instances where agent_id = ${exit.agentId}::uuid`;
      if (row === undefined) return;
      const crashes = ranLong ? 1 : row.crashes + 1;
      const retry = row.desired_state === 'running' && crashes < MAX_CRASHES;
      const reason = retry
        ? exit.reason
        : row.desired_state === 'running'
          ? `stopped restarting after ${crashes} crashes; last: ${exit.reason}`
          : exit.reason;
      await setState(tx, exit.agentId, 'crashed', reason.slice(0, 500), { crashes });
      await endOpenSupportSessions(tx, tenantId, exit.agentId, 'instance_stopped');
      await appendAuditEvent(tx, tenantId, {
        actor: 'system',
        action: 'agent.crashed',
        target: `agent:${exit.agentId}`,
        data: { crashes, restarting: retry },
      });
      if (retry) {
        await enqueueInstanceSync(tx, tenantId, exit.agentId, {
          runAt: new Date(Date.now() + backoffMs(crashes, deps.backoffBaseMs)),
        });
      }
    });
  }

  /** Tenants of instances this process started, for crash records (the driver reports agent ids only). */
  const tenantOf = new Map<string, string>();
  driver.onExit((exit) => {
    const tenantId = tenantOf.get(exit.agentId);
    if (tenantId === undefined) return;
    crashed(exit, tenantId, true).catch((error: unknown) =>
      log.error({ err: error, agentId: exit.agentId }, 'recording a crash failed'),
    );
  });

  return {
    /** The agent_instance_sync job. */
    async sync(payload: unknown): Promise<void> {
      if (!isSyncPayload(payload)) throw new Error('agent_instance_sync: malformed payload');
      const { tenant_id: tenantId, agent_id: agentId } = payload;
      tenantOf.set(agentId, tenantId);
      const current = driver.status(agentId).state;
      // One read of the agent; it gathers what a start needs only when a start may follow.
      const { agent, spec } = await prepare(tenantId, agentId, current !== 'running' || payload.restart);
      if (agent === undefined) {
        // The agent was deleted: its instance must not outlive it, nor its files.
        await driver.remove(agentId);
        tenantOf.delete(agentId);
        return;
      }
      if (agent.desired_state === 'stopped') {
        if (current !== 'stopped' || payload.restart) await stop(tenantId, agentId, null);
        else await record(tenantId, (tx) => setState(tx, agentId, 'stopped', null));
        return;
      }
      if (current === 'running' && !payload.restart) {
        await driver.setSupportAccess(agentId, agent.support_access ? deps.supportKey : undefined);
        // AGT-5: the driver has cut them; each session's end goes to the owner's audit log.
        if (!agent.support_access) {
          await record(tenantId, async (tx) => {
            await endOpenSupportSessions(tx, tenantId, agentId, 'support_access_off');
          });
        }
        return;
      }
      if (current !== 'stopped') await driver.stop(agentId);
      if (spec !== undefined) await start(tenantId, agentId, spec);
    },

    /** The agent_reconcile job: every instance whose recorded state differs from what this process runs. */
    async reconcile(): Promise<void> {
      const rows = await sql<{ tenant_id: string; agent_id: string }[]>`
        select tenant_id, agent_id from enclave.agent_instances_to_reconcile()`;
      for (const row of rows) {
        if (driver.status(row.agent_id).state === 'running') continue;
        await serviceQuery(
          sql,
          { tenantId: row.tenant_id, reason: 'runtime: reconcile after a restart' },
          (tx) => enqueueInstanceSync(tx, row.tenant_id, row.agent_id),
        );
      }
    },

    stopAll: () => driver.stopAll(),
  };
}

export type Lifecycle = ReturnType<typeof createLifecycle>;
