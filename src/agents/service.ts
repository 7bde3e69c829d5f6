import { principalActor, recordFor } from '../accounts/audit-events.ts';
import { authorize } from '../accounts/roles.ts';
import type { Principal } from '../accounts/service.ts';
import { appendEitherAuditEvent } from '../audit/append.ts';
import type { TenantSql } from '../db/tenant.ts';
import {
  afterPosition,
  boundTenant,
  type PageRequest,
  type PositionedRow,
  positionColumns,
} from '../http/page-cursor.ts';
import type { CredentialListing, Vault } from '../vault/service.ts';
import { credentialValueProblem, last4Of } from '../vault/service.ts';
import { AgentsError, agentFieldError } from './errors.ts';
import { handleProblem } from './handles.ts';
import { enqueueInstanceSync } from './runtime/instances.ts';
import {
  type AgentTemplate,
  credentialFormatOk,
  type TemplateCatalog,
  type TemplateCredential,
} from './templates.ts';

// Agents (AGT-1): a tenant's agents, each with its template, support-access
// choice and credentials. Every function runs in the caller's tenant
// transaction, so the agent, its credentials, its provision record and the
// audit events commit together.

export interface Agent {
  readonly id: string;
  readonly handle: string;
  readonly name: string;
  readonly description: string;
  readonly template: string;
  readonly support_access: boolean;
  /** Domains the agent's egress may reach (AGT-4); null: any public destination. */
  readonly egress_allowlist: string[] | null;
  /** Whether its A2A card is public (RLY-1; src/relay/card-publication.ts changes it). */
  readonly card_published: boolean;
  /** The user who created it (members manage only their own); null once that user was removed. */
  readonly created_by: string | null;
  readonly created_at: Date;
  readonly updated_at: Date;
}

export interface ProvisionRecord {
  readonly template: string;
  readonly support_access: boolean;
  readonly credentials_provided: Record<string, boolean>;
  readonly requested_at: Date;
}

export interface AgentDetail extends Agent {
  readonly credentials: CredentialListing[];
  readonly provision: ProvisionRecord | null;
}

export interface NewAgent {
  readonly name: string;
  readonly handle: string;
  readonly description: string;
  readonly template: string;
  readonly supportAccess: boolean;
  /** Credential name → value, as submitted. */
  readonly credentials: Readonly<Record<string, string>>;
}

export interface AgentChanges {
  readonly name?: string;
  readonly description?: string;
  readonly supportAccess?: boolean;
  /** null opens egress to any public destination again. */
  readonly egressAllowlist?: readonly string[] | null;
}

const AGENT_COLUMNS =
  'id, handle, name, description, template_id as template, support_access, egress_allowlist, card_published, ' +
  'created_by, created_at, updated_at';

/** An allowlist entry: a domain (`api.github.com`) or its subdomains (`*.github.com`). */
export const EGRESS_ENTRY_PATTERN =
  '^(\\*\\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';
const EGRESS_ENTRY = new RegExp(EGRESS_ENTRY_PATTERN);
export const MAX_EGRESS_ENTRIES = 100;

/** The index of the first allowlist entry that is not a lowercase domain or `*.domain`; -1 when all are. */
export function invalidEgressEntry(entries: readonly string[]): number {
  return entries.findIndex((entry) => entry.length > 253 || !EGRESS_ENTRY.test(entry));
}

function templateOf(templates: TemplateCatalog, agent: Pick<Agent, 'template'>): AgentTemplate {
  const template = templates.get(agent.template);
  // Templates are operator files: one removed while agents still use it is for the operator to put back.
  if (template === undefined) {
    throw new AgentsError(
      'template_unavailable',
      `agent template "${agent.template}" is no longer installed`,
    );
  }
  return template;
}

/** Why a value is refused for this credential, naming the rule only; undefined if it is acceptable. */
function valueProblem(
  template: AgentTemplate,
  credential: TemplateCredential,
  value: string,
): string | undefined {
  const problem = credentialValueProblem(value);
  if (problem !== undefined) return problem;
  if (!credentialFormatOk(credential, value)) {
    // In words: a person reads this on the onboarding form; the expression is the operator's.
    const expected = credential.patternDescription === undefined ? '' : ` (${credential.patternDescription})`;
    return `does not have the format template "${template.id}" expects for ${credential.name}${expected}`;
  }
  return undefined;
}

/** Credentials a template needs that `present` lacks, each once: required ones, and one_of groups with no member present. */
function allMissingCredentials(template: AgentTemplate, present: ReadonlySet<string>): AgentsError[] {
  const missing = template.credentials
    .filter((credential) => credential.required && !present.has(credential.name))
    .map((credential) =>
      agentFieldError(`credentials/${credential.name}`, `is required by template "${template.id}"`),
    );
  const groups = new Map<string, string[]>();
  for (const credential of template.credentials) {
    if (credential.oneOf !== undefined)
      groups.set(credential.oneOf, [...(groups.get(credential.oneOf) ?? []), credential.name]);
  }
  for (const [group, names] of groups) {
    if (!names.some((name) => present.has(name))) {
      missing.push(
        agentFieldError(
          'credentials',
          `template "${template.id}" needs at least one of ${names.join(', ')} (${group})`,
        ),
      );
    }
  }
  return missing;
}

/** The first credential a template needs that `present` lacks. */
function missingCredentials(template: AgentTemplate, present: ReadonlySet<string>): AgentsError | undefined {
  return allMissingCredentials(template, present)[0];
}

function credentialOf(template: AgentTemplate, name: string, field: string): TemplateCredential {
  // name is attacker-controlled; a linear search over the template's own list, no object lookup.
  const credential = template.credentials.find((candidate) => candidate.name === name);
  if (credential === undefined) {
    throw agentFieldError(field, `is not a credential of template "${template.id}"`);
  }
  return credential;
}

export function createAgentsService(deps: { vault: Vault; templates: TemplateCatalog }) {
  const { vault, templates } = deps;

  async function find(tx: TenantSql, id: string): Promise<Agent> {
    const [agent] = await tx<Agent[]>`select ${tx.unsafe(AGENT_COLUMNS)} from agents where id = ${id}::uuid`;
    if (agent === undefined) throw new AgentsError('not_found', 'no such agent');
    return agent;
  }

  async function detail(tx: TenantSql, agent: Agent): Promise<AgentDetail> {
    const [credentials, [provision]] = await Promise.all([
      vault.listCredentials(tx, agent.id),
      tx<ProvisionRecord[]>`
        select template_id as template, support_access, credentials_provided, created_at as requested_at
        from agent_provision_requests where agent_id = ${agent.id}::uuid
        order by created_at desc limit 1`,
    ]);
    return { ...agent, credentials, provision: provision ?? null };
  }

  /**
   * Everything wrong with a new agent that needs no database, each field once,
   * in the order the API reports the first of them; empty when it may be made.
   */
  function newAgentProblems(input: NewAgent): AgentsError[] {
    const template = templates.get(input.template);
    if (template === undefined) return [agentFieldError('template', 'is not an installed agent template')];
    const problems: AgentsError[] = [];
    const handle = handleProblem(input.handle);
    if (handle !== undefined) problems.push(agentFieldError('handle', handle));
    const present = new Set<string>();
    for (const [name, value] of Object.entries(input.credentials)) {
      const field = `credentials/${name}`;
      try {
        const problem = valueProblem(template, credentialOf(template, name, field), value);
        if (problem !== undefined) problems.push(agentFieldError(field, problem));
      } catch (error) {
        if (!(error instanceof AgentsError)) throw error;
        problems.push(error);
      }
      // Supplied, even if refused: it is not also reported as missing.
      present.add(name);
    }
    return [...problems, ...allMissingCredentials(template, present)];
  }

  /** Checks everything about a new agent that needs no database, so a bad request writes nothing. */
  function validateNew(input: NewAgent): AgentTemplate {
    const [first] = newAgentProblems(input);
    if (first !== undefined) throw first;
    const template = templates.get(input.template);
    if (template === undefined) throw agentFieldError('template', 'is not an installed agent template');
    return template;
  }

  return {
    newAgentProblems,
    validateNew,

    async create(tx: TenantSql, principal: Principal, input: NewAgent): Promise<AgentDetail> {
      authorize(principal, 'agent.create');
      const template = validateNew(input);
      const tenantId = principal.user.tenant_id;
      const inserted = await tx.savepoint(
        (sp) =>
          sp<Agent[]>`
          insert into agents (tenant_id, handle, name, description, template_id, support_access, created_by)
          values (${tenantId}::uuid, ${input.handle}, ${input.name}, ${input.description}, ${template.id},
                  ${input.supportAccess}, ${principal.user.id}::uuid)
          on conflict (handle) do nothing
          returning ${sp.unsafe(AGENT_COLUMNS)}`,
      );
      const agent = inserted[0];
      // Handles are platform-wide: whether another tenant holds it is exactly what "taken" says.
      if (agent === undefined) throw new AgentsError('handle_taken', 'this handle is taken', 'handle');
      for (const [name, value] of Object.entries(input.credentials)) {
        await vault.putCredential(tx, { tenantId, agentId: agent.id, name }, value);
      }
      // VLT-3: the record of what was asked for holds one boolean per credential, never a value.
      const provided = Object.fromEntries(
        template.credentials.map((credential) => [
          credential.name,
          Object.hasOwn(input.credentials, credential.name),
        ]),
      );
      await tx`
        insert into agent_provision_requests
          (tenant_id, agent_id, requested_by, template_id, support_access, credentials_provided)
        values (${tenantId}::uuid, ${agent.id}::uuid, ${principal.user.id}::uuid, ${template.id},
                ${input.supportAccess}, ${tx.json(provided)})`;
      await recordFor(tx, principal, {
        action: 'agent.created',
        target: `agent:${agent.id}`,
        data: {
          handle: agent.handle,
          template: template.id,
          support_access: agent.support_access,
          credentials_provided: provided,
        },
      });
      return detail(tx, agent);
    },

    /** A page of the tenant's agents, oldest first, keyed by (created_at, id) (agents_tenant_page index). */
    list: (tx: TenantSql, page: PageRequest): Promise<(Agent & PositionedRow)[]> =>
      tx<(Agent & PositionedRow)[]>`
        select ${tx.unsafe(AGENT_COLUMNS)}, ${positionColumns(tx, 'created_at')} from agents
        where ${boundTenant(tx)} ${afterPosition(tx, 'created_at', 'asc', page.after)}
        order by created_at, id limit ${page.limit + 1}::int4`,

    get: async (tx: TenantSql, id: string): Promise<AgentDetail> => detail(tx, await find(tx, id)),

    /** Throws not_found for an unknown agent, forbidden unless the principal may take `action` on it. */
    async authorizeOn(
      tx: TenantSql,
      principal: Principal,
      id: string,
      action: 'agent.manage' | 'agent.address' | 'credential.manage',
    ): Promise<void> {
      authorize(principal, action, (await find(tx, id)).created_by);
    },

    async update(
      tx: TenantSql,
      principal: Principal,
      id: string,
      changes: AgentChanges,
    ): Promise<AgentDetail> {
      const allowlist = changes.egressAllowlist;
      if (allowlist !== undefined && allowlist !== null) {
        // Every path in (API, dashboard) meets this check: entries are attacker-controlled text.
        if (allowlist.length > MAX_EGRESS_ENTRIES) {
          throw agentFieldError('egress_allowlist', `takes at most ${MAX_EGRESS_ENTRIES} domains`);
        }
        const bad = invalidEgressEntry(allowlist);
        if (bad >= 0) {
          throw agentFieldError(
            'egress_allowlist',
            `entry ${bad + 1} is not a domain such as api.github.com or *.github.com`,
          );
        }
      }
      const before = await find(tx, id);
      authorize(principal, 'agent.manage', before.created_by);
      const [agent] = await tx<Agent[]>`
        update agents set
          name = ${changes.name ?? before.name},
          description = ${changes.description ?? before.description},
          support_access = ${changes.supportAccess ?? before.support_access},
          egress_allowlist = ${
            changes.egressAllowlist === undefined
              ? before.egress_allowlist
              : changes.egressAllowlist === null
                ? null
                : [...new Set(changes.egressAllowlist)]
          }::text[],
          updated_at = now()
        where id = ${id}::uuid
        returning ${tx.unsafe(AGENT_COLUMNS)}`;
      if (agent === undefined) throw new AgentsError('not_found', 'no such agent');
      const changed = (['name', 'description', 'support_access', 'egress_allowlist'] as const).filter(
        (key) => JSON.stringify(before[key]) !== JSON.stringify(agent[key]),
      );
      if (changed.includes('support_access') || changed.includes('egress_allowlist')) {
        // AGT-5: a running instance opens or closes its support listener at once; a new
        // allowlist (AGT-4) takes effect when the instance is next started.
        const [instance] = await tx`select 1 from agent_instances where agent_id = ${id}::uuid`;
        if (instance !== undefined) await enqueueInstanceSync(tx, principal.user.tenant_id, id);
      }
      if (changed.length > 0) {
        await recordFor(tx, principal, {
          action: 'agent.updated',
          target: `agent:${id}`,
          data: { changed, support_access: agent.support_access },
        });
      }
      return detail(tx, agent);
    },

    async remove(tx: TenantSql, principal: Principal, id: string): Promise<void> {
      const agent = await find(tx, id);
      authorize(principal, 'agent.manage', agent.created_by);
      // Credentials and the provision record go with the agent (on delete cascade).
      const [{ count } = { count: 0 }] = await tx<{ count: number }[]>`
        select count(*)::int as count from credentials where agent_id = ${id}::uuid`;
      const [instance] = await tx`select 1 from agent_instances where agent_id = ${id}::uuid`;
      await tx`delete from agents where id = ${id}::uuid`;
      // Its instance must not outlive it: the runtime stops whatever runs for a deleted agent.
      if (instance !== undefined) await enqueueInstanceSync(tx, principal.user.tenant_id, id);
      await recordFor(tx, principal, {
        action: 'agent.deleted',
        target: `agent:${id}`,
        data: { handle: agent.handle, credentials_deleted: count },
      });
    },

    async listCredentials(tx: TenantSql, agentId: string): Promise<CredentialListing[]> {
      await find(tx, agentId);
      return vault.listCredentials(tx, agentId);
    },

    /** Adds or replaces one credential (VLT-4: the agent's other credentials are not touched). */
    async setCredential(
      tx: TenantSql,
      principal: Principal,
      agentId: string,
      name: string,
      value: string,
    ): Promise<{ listing: CredentialListing; created: boolean }> {
      // Three round trips: the agent is looked up in the one that takes the tenant's key lock and
      // reads its data key, and the vault seals and writes nothing unless these checks pass; the
      // audit event is appended by the upsert's statement.
      const checked = find(tx, agentId).then((agent) => {
        authorize(principal, 'credential.manage', agent.created_by);
        const template = templateOf(templates, agent);
        const credential = credentialOf(template, name, 'name');
        const problem = valueProblem(template, credential, value);
        if (problem !== undefined) throw agentFieldError('value', problem);
      });
      const tenantId = principal.user.tenant_id;
      const event = {
        actor: principalActor(principal),
        target: `agent:${agentId}`,
        data: { name, last4: last4Of(value) },
      };
      return vault.putCredential(tx, { tenantId, agentId, name }, value, {
        checked,
        record: (isNew) =>
          appendEitherAuditEvent(
            tx,
            tenantId,
            isNew,
            { ...event, action: 'credential.added' },
            { ...event, action: 'credential.rotated' },
          ),
      });
    },

    async deleteCredential(
      tx: TenantSql,
      principal: Principal,
      agentId: string,
      name: string,
    ): Promise<void> {
      const agent = await find(tx, agentId);
      authorize(principal, 'credential.manage', agent.created_by);
      const template = templateOf(templates, agent);
      const remaining = new Set((await vault.listCredentials(tx, agentId)).map((listing) => listing.name));
      if (!remaining.delete(name)) throw new AgentsError('not_found', 'no such credential');
      // A credential the template cannot run without is replaced, not deleted.
      const missing = missingCredentials(template, remaining);
      if (missing !== undefined) {
        throw agentFieldError('name', `${missing.message}: save a new value for it instead of deleting it`);
      }
      await vault.deleteCredential(tx, { tenantId: principal.user.tenant_id, agentId, name });
      await recordFor(tx, principal, {
        action: 'credential.deleted',
        target: `agent:${agentId}`,
        data: { name },
      });
    },
  };
}

export type AgentsService = ReturnType<typeof createAgentsService>;
