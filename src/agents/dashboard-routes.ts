import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { frameFor } from '../accounts/dashboard-routes.ts';
import { AccountsError } from '../accounts/errors.ts';
import { formErrors, shownError } from '../accounts/page-routes.ts';
import { signedIn } from '../accounts/principal.ts';
import { may } from '../accounts/roles.ts';
import type { Principal } from '../accounts/service.ts';
import type { TenantSql } from '../db/tenant.ts';
import { modelUsage, setModelLimits } from '../gateway/service.ts';
import type { App } from '../http/app.ts';
import type { PageCursors } from '../http/page-cursor.ts';
import { IdParams } from '../http/schemas.ts';
import { MULTILINE } from '../http/text-input.ts';
import { setCardPublished } from '../relay/card-publication.ts';
import { cardPath } from '../relay/cards.ts';
import { RelayError } from '../relay/errors.ts';
import { listingOf, requestListing, withdrawListing } from '../relay/listings.ts';
import { MAX_CREDENTIAL_CHARACTERS } from '../vault/service.ts';
import type { FormErrors } from '../web/account-pages.ts';
import {
  type AgentFormValues,
  type AgentPageInput,
  agentNoticeFrom,
  agentPage,
  agentsListPage,
  credentialFieldName,
  deleteAgentPage,
  onboardingPage,
  templatePickerPage,
} from '../web/agent-pages.ts';
import { cardSection } from '../web/card-section.ts';
import { confirmPage, forbiddenPage, notFoundPage } from '../web/dashboard-pages.ts';
import { bodyText, type FormProblem, formProblem, formProblems, sendPage } from '../web/forms.ts';
import { instanceSection, instanceStateJson, stateLine } from '../web/instance-section.ts';
import { badCursorPage, readListPage } from '../web/list-pages.ts';
import { type ModelSectionInput, modelSection } from '../web/model-section.ts';
import { listEgressRecords } from './egress/records.ts';
import { AgentsError } from './errors.ts';
import { type InstancesService, instanceUrl } from './runtime/instances.ts';
import { type AgentsService, invalidEgressEntry, MAX_EGRESS_ENTRIES } from './service.ts';
import type { TemplateCatalog } from './templates.ts';

// The agent pages under /dashboard/agents (AGT-1), beside the JSON API and on
// the same service. Every route is auth 'user'; every POST has already passed
// the CSRF Origin check. Actions end in a 303 to a GET page (post/redirect/get).
// A form that fails is shown again with the rule broken and a 4xx; credential
// values are never written back into it (VLT-2). An id that is malformed,
// unknown or another tenant's gets the same 404 page (TEN-4).

const CREDENTIAL_NAME = '^[a-z][a-z0-9_]{0,62}$';
const form = { additionalProperties: false } as const;
const str = (maxLength: number) => Type.String({ maxLength });
// Descriptions, the allowlist textarea and secrets (a PEM key, a JSON file) may hold lines and tabs.
const text = (maxLength: number) => Type.String({ ...MULTILINE, maxLength });
const SupportAccess = Type.Optional(Type.Literal('on'));

const NewAgentBody = Type.Object(
  {
    name: str(100),
    handle: str(100),
    description: Type.Optional(text(1000)),
    template: str(100),
    support_access: SupportAccess,
  },
  {
    ...form,
    // One password field per credential of the template: credential_<name>.
    patternProperties: { '^credential_[a-z][a-z0-9_]{0,62}$': text(MAX_CREDENTIAL_CHARACTERS) },
    maxProperties: 40,
  },
);
const SettingsBody = Type.Object(
  {
    name: str(100),
    description: Type.Optional(text(1000)),
    support_access: SupportAccess,
    egress_allowlist: Type.Optional(text(100 * 256)),
  },
  form,
);

/** The allowlist textarea: one domain per line; empty means any public destination. */
function allowlistFrom(text: string): { entries: string[] | null } | { problem: string } {
  const entries = text
    .split(/\r?\n/)
    .map((line) => line.trim().toLowerCase())
    .filter((line) => line !== '');
  if (entries.length > MAX_EGRESS_ENTRIES) return { problem: `takes at most ${MAX_EGRESS_ENTRIES} domains` };
  const bad = invalidEgressEntry(entries);
  if (bad >= 0) {
    return { problem: `line ${bad + 1} is not a domain such as api.github.com or *.github.com` };
  }
  return { entries: entries.length === 0 ? null : entries };
}
const CredentialBody = Type.Object(
  { name: Type.String({ pattern: CREDENTIAL_NAME }), value: text(MAX_CREDENTIAL_CHARACTERS) },
  form,
);
const ModelLimitsBody = Type.Object(
  { requests_per_minute: Type.Optional(str(20)), tokens_per_day: Type.Optional(str(20)) },
  form,
);
/** A limit field's number: null when empty, 'invalid' unless a whole number from 1 to max. */
function limitFrom(value: string | undefined, max: number): number | null | 'invalid' {
  const text = (value ?? '').trim().replaceAll(',', '');
  if (text === '') return null;
  if (!/^\d{1,13}$/.test(text)) return 'invalid';
  const limit = Number(text);
  return limit >= 1 && limit <= max ? limit : 'invalid';
}
const CredentialParams = Type.Object(
  { id: Type.String({ format: 'uuid' }), name: Type.String({ pattern: CREDENTIAL_NAME }) },
  form,
);
/** What agent-state.js reads: the state line and which buttons make sense. */
const InstanceStateBody = Type.Object(
  {
    line: Type.String(),
    settling: Type.Boolean(),
    actions: Type.Object({ start: Type.Boolean(), stop: Type.Boolean(), restart: Type.Boolean() }),
  },
  form,
);
const NewAgentQuery = Type.Object({ template: Type.Optional(str(100)) }, form);
const CardBody = Type.Object({ published: Type.Union([Type.Literal('true'), Type.Literal('false')]) }, form);
const ListingBody = Type.Object(
  { action: Type.Union([Type.Literal('request'), Type.Literal('withdraw')]) },
  form,
);

const AGENT_LABELS: Readonly<Record<string, string>> = {
  name: 'Name',
  handle: 'Handle',
  description: 'Description',
  template: 'Template',
  support_access: 'Support access',
  credentials: 'Credentials',
  egress_allowlist: 'Allowed destinations',
};
const CREDENTIAL_LABELS = { name: 'Credential', value: 'New value' };

/** A service rule as a sentence: `Handle is reserved.`, `Credentials: template "x" needs …`. */
function sentence(label: string, message: string): string {
  const joined = /^(is|are|must|does|has)\b/.test(message) ? `${label} ${message}` : `${label}: ${message}`;
  return joined.endsWith('.') ? joined : `${joined}.`;
}

/** The form errors of a service failure; `labelOf` names its field (a credential is named by itself). */
function ruleErrors(problem: FormProblem, labelOf: (field: string) => string | undefined): FormErrors {
  if (problem.field === undefined) return { form: problem.message };
  const text = sentence(labelOf(problem.field) ?? 'The form', problem.message);
  return { form: text, fields: { [problem.field]: text } };
}

/**
 * Several service rules broken at once: each shown once, by its field, and a
 * count above the form; a field the form does not show (`shown` false) is the box's.
 */
function allRuleErrors(
  problems: readonly { message: string; field?: string | undefined }[],
  labelOf: (field: string) => string | undefined,
  shown: (field: string) => boolean,
): FormErrors {
  return formErrors(
    problems.map(({ message, field }) =>
      field === undefined
        ? { message, field }
        : {
            message: sentence(labelOf(field) ?? 'The form', message),
            field: shown(field) ? field : undefined,
          },
    ),
  );
}

function schemaErrors(problem: FormProblem): FormErrors {
  if (problem.field === undefined) return { form: problem.message };
  return { form: problem.message, fields: { [problem.field]: problem.message } };
}

const agentLabel = (field: string) =>
  field.startsWith('credentials/') ? field.slice('credentials/'.length) : AGENT_LABELS[field];

/** The submitted credentials: credential_<name> fields that are not empty (an empty optional field is "not provided"). */
function submittedCredentials(body: object): Record<string, string> {
  // Field names are attacker-controlled: the schema admits only credential_<a-z…> (never "__proto__"),
  // and the service looks each name up in the template's own list.
  const credentials: Record<string, string> = {};
  for (const [key, value] of Object.entries(body)) {
    if (key.startsWith('credential_') && typeof value === 'string' && value !== '') {
      credentials[key.slice('credential_'.length)] = value;
    }
  }
  return credentials;
}

const isNotFound = (error: unknown) => error instanceof AgentsError && error.code === 'not_found';

export interface AgentPagesDeps {
  readonly agents: AgentsService;
  readonly templates: TemplateCatalog;
  readonly instances: InstancesService;
  /** The last lines of an instance's output. */
  readonly logs: (agentId: string, lines: number) => Promise<string[]>;
  readonly publicUrl: string;
  readonly agentsDomain: string;
  /** The API's list cursors: a page link and GET /api/v1/agents's next_after are the same cursor. */
  readonly cursors: PageCursors;
}

export function registerAgentPages(app: App, deps: AgentPagesDeps): void {
  const { agents, templates, instances } = deps;
  const user = { auth: 'user' as const };
  const hide = { hide: true } as const;
  const page = { config: user, schema: hide };
  const withId = { config: user, attachValidation: true, schema: { ...hide, params: IdParams } };
  const withIdForm = <B>(body: B) => ({
    config: user,
    attachValidation: true,
    schema: { ...hide, params: IdParams, body },
  });
  // Labels for the schema's verdict on the onboarding form, credential fields included.
  const newAgentLabels: Record<string, string> = { ...AGENT_LABELS };
  for (const template of templates.list()) {
    for (const credential of template.credentials) {
      newAgentLabels[credentialFieldName(credential.name)] = credential.name;
    }
  }

  const notFound = async (request: FastifyRequest, reply: FastifyReply, what = 'agent') =>
    sendPage(reply, 404, notFoundPage(await frameFor(request), what));

  /** The 404 page for an unknown agent, the 403 page for one the role may not act on; anything else is thrown. */
  const refused = async (request: FastifyRequest, reply: FastifyReply, error: unknown) => {
    if (isNotFound(error)) return notFound(request, reply);
    if (error instanceof AccountsError && error.code === 'forbidden') {
      return sendPage(reply, 403, forbiddenPage(await frameFor(request), error.message));
    }
    throw error;
  };

  /** Everything the agent page shows, in one tenant transaction. */
  const readAgent = async (tx: TenantSql, principal: Principal, id: string) => {
    const agent = await agents.get(tx, id);
    // Address, output and egress only for whom roles.ts allows them (a member, on others' agents: no).
    const reach = await instances.mayReach(tx, principal, id);
    const gateway = templates.get(agent.template)?.modelGateway === true;
    const [instance, egress, sessions, models, listing] = await Promise.all([
      instances.view(tx, id),
      reach ? listEgressRecords(tx, id, 20) : [],
      instances.supportSessions(tx, id, 10),
      reach && gateway ? modelUsage(tx, agents, principal, id, 7) : undefined,
      listingOf(tx, id),
    ]);
    return { agent, instance, egress, sessions, reach, models, listing };
  };

  const showAgent = async (
    request: FastifyRequest,
    reply: FastifyReply,
    status: number,
    id: string,
    extra: Omit<AgentPageInput, 'agent' | 'template'> & {
      modelLimits?: ModelSectionInput['form'];
      cardError?: string;
    } = {},
  ) => {
    let found: Awaited<ReturnType<typeof readAgent>>;
    try {
      found = await request.withTenant((tx) => readAgent(tx, signedIn(request), id));
    } catch (error) {
      if (isNotFound(error)) return notFound(request, reply);
      throw error;
    }
    const { agent, instance, egress, sessions, reach, models, listing } = found;
    const template = templates.get(agent.template);
    const principal = signedIn(request);
    const manage = may(principal, 'agent.manage', agent.created_by);
    const section = instanceSection({
      manage,
      reach,
      agentId: id,
      instance,
      url:
        instance === undefined || !reach
          ? undefined
          : instanceUrl(deps.publicUrl, deps.agentsDomain, instance.subdomain),
      logs: reach ? await deps.logs(id, 50) : [],
      egress,
      sessions,
    });
    const { modelLimits, cardError, ...rest } = extra;
    return sendPage(
      reply,
      status,
      agentPage(await frameFor(request), {
        agent,
        template,
        instance: section,
        models:
          models === undefined ? undefined : modelSection({ agentId: id, models, manage, form: modelLimits }),
        card: cardSection({
          agentId: id,
          published: agent.card_published,
          cardUrl: `${deps.publicUrl}${cardPath(agent.handle)}`,
          manage,
          error: cardError,
          listing,
        }),
        may: { manage, credentials: may(principal, 'credential.manage', agent.created_by) },
        ...rest,
      }),
    );
  };

  for (const action of ['start', 'stop', 'restart'] as const) {
    app.post(`/dashboard/agents/:id/${action}`, withId, async (request, reply) => {
      if (request.validationError !== undefined) return notFound(request, reply);
      const { id } = request.params;
      try {
        await request.withTenant((tx) => instances.request(tx, signedIn(request), id, action));
      } catch (error) {
        if (isNotFound(error)) return notFound(request, reply);
        const shown = shownError(reply, error);
        return showAgent(request, reply, shown.status, id, { notice: shown.message });
      }
      return reply.redirect(`/dashboard/agents/${id}?notice=instance-${action}`, 303);
    });
  }

  // The state line and the actions that make sense, for agent-state.js; an unknown id is a 404 problem.
  app.get(
    '/dashboard/agents/:id/state',
    { config: user, schema: { ...hide, params: IdParams, response: { 200: InstanceStateBody } } },
    (request) =>
      request.withTenant(async (tx) => instanceStateJson(await instances.view(tx, request.params.id))),
  );

  app.get('/dashboard/agents', page, async (request, reply) => {
    // The same cursors as GET /api/v1/agents: the tenant's one agent list.
    const scope = { list: 'agents', tenantId: signedIn(request).user.tenant_id };
    const read = await request.withTenant(async (tx) => {
      const list = await readListPage(deps.cursors, scope, '/dashboard/agents', request.query, (at) =>
        agents.list(tx, at),
      );
      if (list === undefined) return undefined;
      return {
        list,
        states: await instances.statesByAgent(
          tx,
          list.rows.map((agent) => agent.id),
        ),
      };
    });
    if (read === undefined) {
      return sendPage(reply, 400, badCursorPage(await frameFor(request), 'agents', '/dashboard/agents'));
    }
    const { list, states } = read;
    return sendPage(
      reply,
      200,
      agentsListPage(await frameFor(request), {
        agents: list.rows,
        pager: list.pager,
        stateOf: (id) => stateLine(states.get(id)),
        templateName: (id) => templates.get(id)?.name ?? id,
        notice: agentNoticeFrom(request.query),
      }),
    );
  });

  // Onboarding, step one: pick a template (a GET form); step two: ?template=ID shows its form.
  const picker = async (request: FastifyRequest, reply: FastifyReply, status: number, error?: string) =>
    sendPage(
      reply,
      status,
      templatePickerPage(await frameFor(request), { templates: templates.list(), error }),
    );

  app.get(
    '/dashboard/agents/new',
    { config: user, attachValidation: true, schema: { ...hide, querystring: NewAgentQuery } },
    async (request, reply) => {
      if (request.validationError !== undefined) return picker(request, reply, 400, 'Choose a template.');
      const id = request.query.template;
      if (id === undefined) return picker(request, reply, 200);
      // The id is attacker-controlled: the catalog is a Map, and an unknown id is only ever said to be unknown.
      const template = templates.get(id);
      if (template === undefined) {
        return picker(request, reply, 404, 'That template is not installed. Choose one of these.');
      }
      return sendPage(reply, 200, onboardingPage(await frameFor(request), { template }));
    },
  );

  app.post(
    '/dashboard/agents',
    { config: user, attachValidation: true, schema: { ...hide, body: NewAgentBody } },
    async (request, reply) => {
      const body: object = request.body ?? {};
      // What may be shown again: never a credential (VLT-2).
      const values: AgentFormValues = {
        name: bodyText(body, 'name', 100),
        handle: bodyText(body, 'handle', 100),
        description: bodyText(body, 'description', 1000),
        supportAccess: bodyText(body, 'support_access', 2) === 'on',
      };
      const template = templates.get(bodyText(body, 'template', 100) ?? '');
      const again = async (status: number, errors: FormErrors) =>
        template === undefined
          ? picker(request, reply, status, errors.form)
          : sendPage(reply, status, onboardingPage(await frameFor(request), { template, values, errors }));

      if (request.validationError !== undefined) {
        const problems = formProblems(request.validationError, newAgentLabels).map(({ message, field }) => ({
          message,
          field: field?.startsWith('credential_')
            ? `credentials/${field.slice('credential_'.length)}`
            : field,
        }));
        // Without a template there is no form to mark fields on: the picker says the first problem.
        return again(400, template === undefined ? { form: problems[0]?.message } : formErrors(problems));
      }
      const name = request.body.name.trim();
      if (name === '') {
        return again(400, schemaErrors({ message: 'Give the agent a name.', field: 'name' }));
      }
      const input = {
        name,
        handle: request.body.handle.trim(),
        description: (request.body.description ?? '').trim(),
        template: request.body.template,
        supportAccess: request.body.support_access === 'on',
        credentials: submittedCredentials(request.body),
      };
      // Every problem at once, each by its field (the API reports the first); before the transaction: a bad form opens none.
      const problems = agents.newAgentProblems(input);
      if (problems.length > 0) {
        const [first] = problems;
        if (template === undefined || first?.field === 'template') {
          return again(400, first === undefined ? {} : ruleErrors(first, agentLabel));
        }
        // A credential the template does not have has no field on the form.
        const fields = new Set(template.credentials.map((credential) => `credentials/${credential.name}`));
        const shown = (field: string) => !field.startsWith('credentials/') || fields.has(field);
        return again(400, allRuleErrors(problems, agentLabel, shown));
      }
      try {
        const created = await request.withTenant((tx) => agents.create(tx, signedIn(request), input));
        return reply.redirect(`/dashboard/agents/${created.id}?notice=agent-created`, 303);
      } catch (error) {
        const shown = shownError(reply, error);
        return again(shown.status, ruleErrors(shown, agentLabel));
      }
    },
  );

  app.get('/dashboard/agents/:id', withId, async (request, reply) => {
    if (request.validationError !== undefined) return notFound(request, reply);
    return showAgent(request, reply, 200, request.params.id, { notice: agentNoticeFrom(request.query) });
  });

  // Settings: name, description, support access (AGT-5). An unticked checkbox is not sent: absent means off.
  app.post('/dashboard/agents/:id', withIdForm(SettingsBody), async (request, reply) => {
    if (request.validationError?.validationContext === 'params') return notFound(request, reply);
    const { id } = request.params;
    const body: object = request.body ?? {};
    const values: AgentFormValues = {
      name: bodyText(body, 'name', 100),
      description: bodyText(body, 'description', 1000),
      supportAccess: bodyText(body, 'support_access', 2) === 'on',
      egressAllowlist: bodyText(body, 'egress_allowlist', 100 * 256),
    };
    const again = (status: number, errors: FormErrors) =>
      showAgent(request, reply, status, id, { settings: { values, errors } });
    if (request.validationError !== undefined) {
      return again(400, schemaErrors(formProblem(request.validationError, AGENT_LABELS)));
    }
    const name = request.body.name.trim();
    if (name === '') return again(400, schemaErrors({ message: 'Give the agent a name.', field: 'name' }));
    const allowlist = allowlistFrom(request.body.egress_allowlist ?? '');
    if ('problem' in allowlist) {
      return again(400, schemaErrors({ message: allowlist.problem, field: 'egress_allowlist' }));
    }
    const changes = {
      name,
      description: (request.body.description ?? '').trim(),
      supportAccess: request.body.support_access === 'on',
      egressAllowlist: allowlist.entries,
    };
    try {
      await request.withTenant((tx) => agents.update(tx, signedIn(request), id, changes));
    } catch (error) {
      if (isNotFound(error)) return notFound(request, reply);
      // The reader has no settings form to correct: the refusal is the page.
      if (error instanceof AccountsError && error.code === 'forbidden') return refused(request, reply, error);
      const shown = shownError(reply, error);
      return again(
        shown.status,
        ruleErrors(shown, (field) => AGENT_LABELS[field]),
      );
    }
    return reply.redirect(`/dashboard/agents/${id}?notice=agent-updated`, 303);
  });

  // Model-gateway limits (AGT-7): empty means no limit; the next call is held to them.
  app.post('/dashboard/agents/:id/model-limits', withIdForm(ModelLimitsBody), async (request, reply) => {
    if (request.validationError?.validationContext === 'params') return notFound(request, reply);
    const { id } = request.params;
    const body: object = request.body ?? {};
    const values = {
      requests_per_minute: bodyText(body, 'requests_per_minute', 20) ?? '',
      tokens_per_day: bodyText(body, 'tokens_per_day', 20) ?? '',
    };
    const again = (status: number, errors: FormErrors) =>
      showAgent(request, reply, status, id, { modelLimits: { values, errors } });
    const perMinute = limitFrom(values.requests_per_minute, 100_000);
    const perDay = limitFrom(values.tokens_per_day, 1_000_000_000_000);
    const fields: Record<string, string> = {};
    if (perMinute === 'invalid')
      fields.requests_per_minute = 'Give a whole number from 1 to 100,000, or leave it empty.';
    if (perDay === 'invalid')
      fields.tokens_per_day = 'Give a whole number from 1 to 1,000,000,000,000, or leave it empty.';
    if (perMinute === 'invalid' || perDay === 'invalid') return again(400, { fields });
    try {
      await request.withTenant((tx) =>
        setModelLimits(tx, agents, signedIn(request), id, {
          requests_per_minute: perMinute,
          tokens_per_day: perDay,
        }),
      );
    } catch (error) {
      return refused(request, reply, error);
    }
    return reply.redirect(`/dashboard/agents/${id}?notice=model-limits-set#models`, 303);
  });

  // The agent's public A2A card (RLY-1): one button turns it on or off.
  app.post('/dashboard/agents/:id/card', withIdForm(CardBody), async (request, reply) => {
    if (request.validationError?.validationContext === 'params') return notFound(request, reply);
    const { id } = request.params;
    if (request.validationError !== undefined) {
      return showAgent(request, reply, 400, id, { cardError: 'Choose to publish or to unpublish the card.' });
    }
    const published = request.body.published === 'true';
    try {
      await request.withTenant((tx) => setCardPublished(tx, agents, signedIn(request), id, published));
    } catch (error) {
      return refused(request, reply, error);
    }
    return reply.redirect(
      `/dashboard/agents/${id}?notice=card-${published ? 'published' : 'unpublished'}#card`,
      303,
    );
  });

  // Its directory listing (RLY-1): ask for it, or withdraw it.
  app.post('/dashboard/agents/:id/listing', withIdForm(ListingBody), async (request, reply) => {
    if (request.validationError?.validationContext === 'params') return notFound(request, reply);
    const { id } = request.params;
    if (request.validationError !== undefined) {
      return showAgent(request, reply, 400, id, {
        cardError: 'Choose to ask for or to withdraw the listing.',
      });
    }
    const withdraw = request.body.action === 'withdraw';
    try {
      await request.withTenant((tx) =>
        (withdraw ? withdrawListing : requestListing)(tx, agents, signedIn(request), id),
      );
    } catch (error) {
      if (
        error instanceof RelayError &&
        (error.code === 'card_unpublished' || error.code === 'listing_state')
      ) {
        return showAgent(request, reply, 409, id, { cardError: error.message });
      }
      return refused(request, reply, error);
    }
    return reply.redirect(
      `/dashboard/agents/${id}?notice=listing-${withdraw ? 'withdrawn' : 'requested'}#listing`,
      303,
    );
  });

  // Add or replace one credential (VLT-4): the value goes to the vault and is never shown again.
  app.post('/dashboard/agents/:id/credentials', withIdForm(CredentialBody), async (request, reply) => {
    if (request.validationError?.validationContext === 'params') return notFound(request, reply);
    const { id } = request.params;
    const chosen = bodyText(request.body, 'name', 63);
    const again = (status: number, errors: FormErrors) =>
      showAgent(request, reply, status, id, { credential: { name: chosen, errors } });
    if (request.validationError !== undefined) {
      return again(400, schemaErrors(formProblem(request.validationError, CREDENTIAL_LABELS)));
    }
    const { name, value } = request.body;
    let created: boolean;
    try {
      const stored = await request.withTenant((tx) =>
        agents.setCredential(tx, signedIn(request), id, name, value),
      );
      created = stored.created;
    } catch (error) {
      if (isNotFound(error)) return notFound(request, reply);
      const shown = shownError(reply, error);
      return again(
        shown.status,
        ruleErrors(shown, (field) => (field === 'name' ? name : CREDENTIAL_LABELS.value)),
      );
    }
    const notice = created ? 'credential-added' : 'credential-rotated';
    return reply.redirect(`/dashboard/agents/${id}?notice=${notice}`, 303);
  });

  // Deleting a credential is confirmed first, on a page of its own (works without JavaScript).
  const credentialDelete = {
    config: user,
    attachValidation: true,
    schema: { ...hide, params: CredentialParams },
  } as const;
  app.get('/dashboard/agents/:id/credentials/:name/delete', credentialDelete, async (request, reply) => {
    if (request.validationError !== undefined) return notFound(request, reply, 'credential');
    const { id, name } = request.params;
    try {
      const agent = await request.withTenant(async (tx) => {
        // Asking to delete is for those who may delete (roles.ts 'credential.manage').
        await agents.authorizeOn(tx, signedIn(request), id, 'credential.manage');
        return agents.get(tx, id);
      });
      if (!agent.credentials.some((credential) => credential.name === name)) {
        return notFound(request, reply, 'credential');
      }
      return sendPage(
        reply,
        200,
        confirmPage(await frameFor(request), {
          title: `Delete the credential ${name} of ${agent.name}?`,
          consequence: `The stored value is deleted and cannot be recovered; ${agent.name} no longer receives it from its next start. To use it again, enter the value again.`,
          action: `/dashboard/agents/${agent.id}/credentials/${encodeURIComponent(name)}/delete`,
          button: 'Delete credential',
          back: `/dashboard/agents/${agent.id}`,
        }),
      );
    } catch (error) {
      if (isNotFound(error)) return notFound(request, reply, 'credential');
      return refused(request, reply, error);
    }
  });

  app.post('/dashboard/agents/:id/credentials/:name/delete', credentialDelete, async (request, reply) => {
    if (request.validationError !== undefined) return notFound(request, reply, 'credential');
    const { id, name } = request.params;
    try {
      await request.withTenant((tx) => agents.deleteCredential(tx, signedIn(request), id, name));
    } catch (error) {
      if (isNotFound(error)) return notFound(request, reply, 'credential');
      const shown = shownError(reply, error);
      return showAgent(request, reply, shown.status, id, {
        credentialsError: sentence(name, shown.message),
      });
    }
    return reply.redirect(`/dashboard/agents/${id}?notice=credential-deleted`, 303);
  });

  // Deleting takes two steps: this confirmation page, then its form.
  app.get('/dashboard/agents/:id/delete', withId, async (request, reply) => {
    if (request.validationError !== undefined) return notFound(request, reply);
    try {
      const agent = await request.withTenant(async (tx) => {
        // Asking to delete is for those who may delete (roles.ts 'agent.manage').
        await agents.authorizeOn(tx, signedIn(request), request.params.id, 'agent.manage');
        return agents.get(tx, request.params.id);
      });
      return sendPage(reply, 200, deleteAgentPage(await frameFor(request), agent));
    } catch (error) {
      return refused(request, reply, error);
    }
  });

  app.post('/dashboard/agents/:id/delete', withId, async (request, reply) => {
    if (request.validationError !== undefined) return notFound(request, reply);
    try {
      await request.withTenant((tx) => agents.remove(tx, signedIn(request), request.params.id));
    } catch (error) {
      return refused(request, reply, error);
    }
    return reply.redirect('/dashboard/agents?notice=agent-deleted', 303);
  });
}
