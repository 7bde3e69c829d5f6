import { Type } from 'typebox';
import { signedIn } from '../accounts/principal.ts';
import type { App } from '../http/app.ts';
import { NextAfter, type PageCursors, PageQuery, readPage } from '../http/page-cursor.ts';
import { ProblemSchema } from '../http/problems.ts';
import { curlExample, Id, IdParams, Timestamp } from '../http/schemas.ts';
import { MULTILINE } from '../http/text-input.ts';
import { MAX_CREDENTIAL_CHARACTERS } from '../vault/service.ts';
import { HANDLE_PATTERN } from './handles.ts';
import { type AgentsService, EGRESS_ENTRY_PATTERN, MAX_EGRESS_ENTRIES } from './service.ts';
import type { TemplateCatalog } from './templates.ts';

// /api/v1/agents and their write-only credentials. HTTP only: schemas,
// status codes, auth mode. Response schemas are allowlists: a credential
// appears as its name, last 4 and timestamps, never its value (VLT-2).

const CREDENTIAL_NAME = '^[a-z][a-z0-9_]{0,62}$';
/** What an agent route may answer besides success: also 409 (a taken handle, an uninstalled template). */
export const AGENT_ROUTE_ERRORS = {
  400: ProblemSchema,
  401: ProblemSchema,
  403: ProblemSchema,
  404: ProblemSchema,
  409: ProblemSchema,
};
const errors = AGENT_ROUTE_ERRORS;

const Agent = Type.Object({
  id: Id,
  handle: Type.String(),
  name: Type.String(),
  description: Type.String(),
  template: Type.String(),
  support_access: Type.Boolean({
    description:
      'Whether the operator may open a support shell in the agent (AGT-5); every session is audited',
  }),
  egress_allowlist: Type.Union([Type.Array(Type.String()), Type.Null()], {
    description:
      'Domains the agent may reach (`api.github.com`, `*.github.com`); null: any public destination',
  }),
  card_published: Type.Boolean({
    description: 'Whether its A2A card is public (PUT /api/v1/agents/{id}/card); off by default',
  }),
  created_at: Timestamp,
  updated_at: Timestamp,
});

const CredentialListing = Type.Object({
  name: Type.String(),
  last4: Type.Union([Type.String(), Type.Null()], {
    description:
      'Last 4 characters of the value, for telling values apart; null for values under 16 characters',
  }),
  created_at: Timestamp,
  updated_at: Timestamp,
});

const AgentDetailSchema = Type.Object({
  ...Agent.properties,
  credentials: Type.Array(CredentialListing),
  provision: Type.Union([
    Type.Object(
      {
        template: Type.String(),
        support_access: Type.Boolean(),
        credentials_provided: Type.Record(Type.String(), Type.Boolean()),
        requested_at: Timestamp,
      },
      {
        description:
          'What was asked for at onboarding: for each credential, only whether it was provided (VLT-3)',
      },
    ),
    Type.Null(),
  ]),
});

// A secret may be a PEM key or a JSON file, and a description a paragraph: both may hold lines and tabs.
const Value = Type.String({
  ...MULTILINE,
  maxLength: MAX_CREDENTIAL_CHARACTERS,
  description: 'The secret. Write-only: no response ever contains it',
});
/** The value as the document states it: the vault refuses an empty one (400) with a message in words. */
const DocumentedValue = Type.String({
  ...MULTILINE,
  minLength: 1,
  maxLength: MAX_CREDENTIAL_CHARACTERS,
  description: 'The secret, not empty. Write-only: no response ever contains it',
});
const Description = Type.String({ ...MULTILINE, maxLength: 1000 });

const CredentialParams = Type.Object(
  {
    id: Id,
    name: Type.String({
      pattern: CREDENTIAL_NAME,
      description:
        "One of the credentials the agent's template takes (GET /api/v1/templates/{id}); another name is refused with 400",
    }),
  },
  { additionalProperties: false },
);

const CREDENTIALS_RULE =
  "Only credentials the template takes, each not empty and in the template's format; " +
  'those it requires (and one of each one_of group) must be present. Otherwise 400.';

const NewAgentBody = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 100 }),
    handle: Type.String({
      pattern: HANDLE_PATTERN,
      description: 'Unique platform-wide; a-z, 0-9 and "-", 3 to 40 characters',
    }),
    description: Type.Optional(Description),
    template: Type.String({
      minLength: 1,
      maxLength: 100,
      description: 'An installed template (GET /api/v1/templates); another is refused with 400',
    }),
    support_access: Type.Optional(Type.Boolean({ default: true })),
    credentials: Type.Optional(
      Type.Record(Type.String({ pattern: CREDENTIAL_NAME }), Value, {
        maxProperties: 32,
        description: CREDENTIALS_RULE,
      }),
    ),
  },
  { additionalProperties: false },
);

/**
 * The onboarding body as the document states it: the template one of those
 * installed, and for each, credential names limited to the ones it takes.
 * The service checks the same with messages in words (agents/service.ts).
 */
function documentedNewAgentBody(templates: TemplateCatalog) {
  const installed = templates.list();
  return {
    ...NewAgentBody,
    properties: {
      ...NewAgentBody.properties,
      template: { ...NewAgentBody.properties.template, enum: installed.map((template) => template.id) },
      credentials: Type.Record(Type.String({ pattern: CREDENTIAL_NAME }), DocumentedValue, {
        maxProperties: 32,
        description: CREDENTIALS_RULE,
      }),
    },
    // One branch per template: its id, and credential names among the ones it takes.
    anyOf: installed.map((template) => ({
      properties: {
        template: { const: template.id },
        credentials: { propertyNames: { enum: template.credentials.map((credential) => credential.name) } },
      },
    })),
  };
}

export function registerAgentsApi(
  app: App,
  deps: { agents: AgentsService; templates: TemplateCatalog; cursors: PageCursors },
): void {
  const { agents } = deps;
  const auth = { auth: 'user' as const };

  app.get(
    '/api/v1/agents',
    {
      config: auth,
      schema: {
        operationId: 'listAgents',
        summary: "A page of the tenant's agents, oldest first",
        tags: ['agents'],
        ...curlExample('GET', '/api/v1/agents?limit=100'),
        querystring: PageQuery,
        response: { 200: Type.Object({ agents: Type.Array(Agent), next_after: NextAfter }), ...errors },
      },
    },
    async (request) => {
      const scope = { list: 'agents', tenantId: signedIn(request).user.tenant_id };
      // after and limit are attacker-controlled: the cursor must carry our MAC for this tenant's agent list.
      const page = await request.withTenant((tx) =>
        readPage(deps.cursors, scope, request.query, (at) => agents.list(tx, at)),
      );
      return { agents: page.rows, next_after: page.next };
    },
  );

  app.post(
    '/api/v1/agents',
    {
      config: auth,
      schema: {
        operationId: 'createAgent',
        summary: 'Onboard an agent from a template, with its credentials',
        tags: ['agents'],
        ...curlExample('POST', '/api/v1/agents', {
          name: 'Echo',
          handle: 'my-echo',
          template: 'echo',
        }),
        body: NewAgentBody,
        documentedBody: documentedNewAgentBody(deps.templates),
        response: { 201: AgentDetailSchema, ...errors },
      },
    },
    async (request, reply) => {
      const principal = signedIn(request);
      const body = request.body;
      const input = {
        name: body.name,
        handle: body.handle,
        description: body.description ?? '',
        template: body.template,
        supportAccess: body.support_access ?? true,
        credentials: body.credentials ?? {},
      };
      agents.validateNew(input); // before the transaction: a bad request opens none
      const created = await request.withTenant((tx) => agents.create(tx, principal, input));
      return reply.status(201).send(created);
    },
  );

  app.get(
    '/api/v1/agents/:id',
    {
      config: auth,
      schema: {
        operationId: 'getAgent',
        summary: 'An agent, its credential metadata and its provision record',
        tags: ['agents'],
        params: IdParams,
        response: { 200: AgentDetailSchema, ...errors },
      },
    },
    async (request) => request.withTenant((tx) => agents.get(tx, request.params.id)),
  );

  app.patch(
    '/api/v1/agents/:id',
    {
      config: auth,
      schema: {
        operationId: 'updateAgent',
        summary: "Change an agent's name, description, support access or egress allowlist",
        tags: ['agents'],
        params: IdParams,
        body: Type.Object(
          {
            name: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
            description: Type.Optional(Description),
            support_access: Type.Optional(Type.Boolean()),
            egress_allowlist: Type.Optional(
              Type.Union([
                Type.Array(Type.String({ pattern: EGRESS_ENTRY_PATTERN, maxLength: 253 }), {
                  maxItems: MAX_EGRESS_ENTRIES,
                }),
                Type.Null(),
              ]),
            ),
          },
          { additionalProperties: false, minProperties: 1 },
        ),
        response: { 200: AgentDetailSchema, ...errors },
      },
    },
    async (request) => {
      const principal = signedIn(request);
      const { name, description, support_access, egress_allowlist } = request.body;
      const changes = {
        ...(name === undefined ? {} : { name }),
        ...(description === undefined ? {} : { description }),
        ...(support_access === undefined ? {} : { supportAccess: support_access }),
        ...(egress_allowlist === undefined ? {} : { egressAllowlist: egress_allowlist }),
      };
      return request.withTenant((tx) => agents.update(tx, principal, request.params.id, changes));
    },
  );

  app.delete(
    '/api/v1/agents/:id',
    {
      config: auth,
      schema: {
        operationId: 'deleteAgent',
        summary: 'Delete an agent and its credentials',
        tags: ['agents'],
        params: IdParams,
        response: { 204: Type.Null(), ...errors },
      },
    },
    async (request, reply) => {
      const principal = signedIn(request);
      await request.withTenant((tx) => agents.remove(tx, principal, request.params.id));
      return reply.status(204).send(null);
    },
  );

  app.get(
    '/api/v1/agents/:id/credentials',
    {
      config: auth,
      schema: {
        operationId: 'listCredentials',
        summary: "An agent's credentials: names, last 4 characters and timestamps, never values",
        tags: ['credentials'],
        params: IdParams,
        response: { 200: Type.Object({ credentials: Type.Array(CredentialListing) }), ...errors },
      },
    },
    async (request) => ({
      credentials: await request.withTenant((tx) => agents.listCredentials(tx, request.params.id)),
    }),
  );

  app.put(
    '/api/v1/agents/:id/credentials/:name',
    {
      config: auth,
      schema: {
        operationId: 'putCredential',
        summary: 'Add or replace one credential (write-only); the agent’s other credentials are untouched',
        tags: ['credentials'],
        params: CredentialParams,
        ...curlExample('PUT', '/api/v1/agents/{id}/credentials/{name}', { value: 'the secret' }),
        body: Type.Object({ value: Value }, { additionalProperties: false }),
        documentedBody: Type.Object({ value: DocumentedValue }, { additionalProperties: false }),
        response: { 200: CredentialListing, 201: CredentialListing, ...errors },
      },
    },
    async (request, reply) => {
      const principal = signedIn(request);
      const { id, name } = request.params;
      const stored = await request.withTenant((tx) =>
        agents.setCredential(tx, principal, id, name, request.body.value),
      );
      return reply.status(stored.created ? 201 : 200).send(stored.listing);
    },
  );

  app.delete(
    '/api/v1/agents/:id/credentials/:name',
    {
      config: auth,
      schema: {
        operationId: 'deleteCredential',
        summary: 'Delete one credential (a credential the template requires is replaced instead)',
        tags: ['credentials'],
        params: CredentialParams,
        response: { 204: Type.Null(), ...errors },
      },
    },
    async (request, reply) => {
      const principal = signedIn(request);
      const { id, name } = request.params;
      await request.withTenant((tx) => agents.deleteCredential(tx, principal, id, name));
      return reply.status(204).send(null);
    },
  );
}
