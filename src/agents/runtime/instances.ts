import { recordFor } from '../../accounts/audit-events.ts';
import { authorize, may } from '../../accounts/roles.ts';
import type { Principal } from '../../accounts/service.ts';
import type { TenantSql } from '../../db/tenant.ts';
import { enqueueJob } from '../../jobs/queue.ts';
import { AgentsError } from '../errors.ts';
import { newSubdomain } from '../ingress/subdomain.ts';
import type { TemplateCatalog } from '../templates.ts';
import type { InstanceState } from './driver.ts';

// An agent's instance as its owner sees and steers it (AGT-6): the state the
// runtime reports and the state its owner wants. Start, stop and restart only
// record the wish and enqueue a sync job; the worker that runs instances
// carries it out (lifecycle.ts), so a burst of requests converges on the last.

export interface InstanceView {
  readonly state: InstanceState;
  readonly desired_state: 'running' | 'stopped';
  readonly reason: string | null;
  readonly crashes: number;
  readonly started_at: Date | null;
  /** The instance's subdomain: shown to its owner only (AGT-3). */
  readonly subdomain: string;
}

export type InstanceAction = 'start' | 'stop' | 'restart';

/** The two states an owner's choices depend on; undefined: never started. */
export type InstanceStates = Pick<InstanceView, 'state' | 'desired_state'> | undefined;

/**
 * Whether the instance is on its way between states (the runtime has not yet
 * done what its owner asked): a page showing it is worth refreshing.
 */
export function instanceSettling(view: InstanceStates): boolean {
  if (view === undefined) return false;
  if (view.state === 'starting' || view.state === 'stopping') return true;
  return view.desired_state === 'running' ? view.state === 'stopped' : view.state === 'running';
}

/**
 * Which actions make sense now. Start: it is not running or on its way there
 * (a crashed one gets a fresh restart budget). Stop: it runs or is asked to.
 * Restart: it runs, or crashed.
 */
export function instanceActions(view: InstanceStates): Readonly<Record<InstanceAction, boolean>> {
  if (view === undefined) return { start: true, stop: false, restart: false };
  const { state, desired_state: wants } = view;
  return {
    start: state === 'crashed' || (wants === 'stopped' && state !== 'running' && state !== 'starting'),
    stop: wants === 'running' || state === 'running' || state === 'starting',
    restart: state === 'running' || state === 'crashed',
  };
}

/** The instance's address: its subdomain under the agents domain, on the platform's scheme and port. */
export function instanceUrl(publicUrl: string, agentsDomain: string, subdomain: string): string {
  const base = new URL(publicUrl);
  return `${base.protocol}//${subdomain}.${agentsDomain}${base.port === '' ? '' : `:${base.port}`}`;
}

const VIEW = 'i.state, i.desired_state, i.state_reason as reason, i.crashes, i.started_at, i.subdomain';

/** The sync job of one agent: keyed, so pending requests collapse into one; queued per agent, so they run in order. */
export function enqueueInstanceSync(
  tx: TenantSql,
  tenantId: string,
  agentId: string,
  options: { restart?: boolean; runAt?: Date } = {},
): Promise<string> {
  return enqueueJob(
    tx,
    'agent_instance_sync',
    { tenant_id: tenantId, agent_id: agentId, restart: options.restart === true },
    {
      jobKey: `agent_instance_sync:${agentId}`,
      queue: `agent:${agentId}`,
      maxAttempts: 3,
      ...(options.runAt === undefined ? {} : { runAt: options.runAt }),
    },
  );
}

export function createInstancesService(deps: { templates: TemplateCatalog }) {
  async function creatorOf(tx: TenantSql, agentId: string): Promise<string | null> {
    const [agent] = await tx<{ created_by: string | null }[]>`
      select created_by from agents where id = ${agentId}::uuid`;
    if (agent === undefined) throw new AgentsError('not_found', 'no such agent');
    return agent.created_by;
  }

  async function agentTemplate(
    tx: TenantSql,
    principal: Principal,
    agentId: string,
  ): Promise<{ prefix: string }> {
    const [agent] = await tx<{ template_id: string; created_by: string | null }[]>`
      select template_id, created_by from agents where id = ${agentId}::uuid`;
    if (agent === undefined) throw new AgentsError('not_found', 'no such agent');
    authorize(principal, 'agent.manage', agent.created_by);
    const template = deps.templates.get(agent.template_id);
    if (template === undefined) {
      throw new AgentsError(
        'template_unavailable',
        `agent template "${agent.template_id}" is no longer installed`,
      );
    }
    return template;
  }

  return {
    /** The instance's state; an agent never started has a stopped one with no subdomain yet. */
    async view(tx: TenantSql, agentId: string): Promise<InstanceView | undefined> {
      // The agent decides between 404 and "never started"; its instance row may not exist yet.
      const [row] = await tx<(InstanceView & { has_instance: boolean })[]>`
        select ${tx.unsafe(VIEW)}, i.agent_id is not null as has_instance
        from agents a left join agent_instances i on i.agent_id = a.id
        where a.id = ${agentId}::uuid`;
      if (row === undefined) throw new AgentsError('not_found', 'no such agent');
      if (!row.has_instance) return undefined;
      const { has_instance, ...view } = row;
      return view;
    },

    /** The instances of these agents, by agent id: one query for a page of the agent list. */
    async statesByAgent(
      tx: TenantSql,
      agentIds: readonly string[],
    ): Promise<Map<string, NonNullable<InstanceStates>>> {
      const rows = await tx<
        { agent_id: string; state: InstanceState; desired_state: 'running' | 'stopped' }[]
      >`
        select agent_id, state, desired_state from agent_instances where agent_id = any(${agentIds}::uuid[])`;
      return new Map(rows.map(({ agent_id, ...states }) => [agent_id, states]));
    },

    /** Whether the principal may see the instance's address, output and egress (roles.ts 'agent.address'). */
    async mayReach(tx: TenantSql, principal: Principal, agentId: string): Promise<boolean> {
      return may(principal, 'agent.address', await creatorOf(tx, agentId));
    },

    /** Throws not_found for an unknown agent, forbidden unless the principal may reach it. */
    async authorizeReach(tx: TenantSql, principal: Principal, agentId: string): Promise<void> {
      authorize(principal, 'agent.address', await creatorOf(tx, agentId));
    },

    async supportSessions(tx: TenantSql, agentId: string, limit: number) {
      return tx<{ operator: string; started_at: Date; ended_at: Date | null }[]>`
        select operator, started_at, ended_at from support_sessions
        where agent_id = ${agentId}::uuid order by started_at desc limit ${limit}::int4`;
    },

    async request(
      tx: TenantSql,
      principal: Principal,
      agentId: string,
      action: InstanceAction,
    ): Promise<InstanceView> {
      const template = await agentTemplate(tx, principal, agentId);
      const tenantId = principal.user.tenant_id;
      // The subdomain is made once, at the first start, and kept for the agent's life.
      for (let attempt = 0; attempt < 5; attempt++) {
        const inserted = await tx
          .savepoint(
            (sp) => sp`
            insert into agent_instances (agent_id, tenant_id, subdomain)
            values (${agentId}::uuid, ${tenantId}::uuid, ${newSubdomain(template.prefix)})
            on conflict (agent_id) do nothing`,
          )
          .then(
            () => true,
            (error: { code?: string }) => {
              if (error.code === '23505') return false; // another agent's subdomain: draw again
              throw error;
            },
          );
        if (inserted) break;
      }
      const desired = action === 'stop' ? 'stopped' : 'running';
      const [row] = await tx<InstanceView[]>`
        update agent_instances i
        set desired_state = ${desired}, updated_at = now(),
            -- A start after the restart limit gives the instance a fresh budget.
            crashes = case when ${action} = 'stop' then crashes else 0 end
        where agent_id = ${agentId}::uuid
        returning ${tx.unsafe(VIEW)}`;
      if (row === undefined) throw new AgentsError('not_found', 'no such agent');
      await enqueueInstanceSync(tx, tenantId, agentId, { restart: action === 'restart' });
      await recordFor(tx, principal, {
        action: `agent.${action}_requested`,
        target: `agent:${agentId}`,
        data: { desired_state: desired },
      });
      return row;
    },
  };
}

export type InstancesService = ReturnType<typeof createInstancesService>;
