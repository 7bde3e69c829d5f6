import { Type } from 'typebox';
import { MODEL_PROVIDERS } from '../gateway/provider-names.ts';
import type { App } from '../http/app.ts';
import { ProblemSchema, sendProblem } from '../http/problems.ts';
import type { AgentTemplate, TemplateCatalog } from './templates.ts';

// /api/v1/templates: the agent templates a user can onboard an agent from,
// with the credentials each takes. Templates are platform-wide (the
// operator's files), the same for every tenant. The response schemas are
// allowlists: a template's command, port and directory are the operator's
// and never leave the server.

const NullableString = (description: string) => Type.Union([Type.String(), Type.Null()], { description });

const CredentialListing = Type.Object({
  name: Type.String(),
  description: Type.String(),
  required: Type.Boolean(),
  env: NullableString('Environment variable the agent reads the credential from'),
  provider: Type.Union([Type.Enum(MODEL_PROVIDERS), Type.Null()], {
    description: 'Model-gateway provider the key is for; such a key is never given to the agent',
  }),
  pattern: NullableString('Format the value must match (a JavaScript regular expression, u flag)'),
  pattern_description: NullableString('The format in words, for people'),
  one_of: NullableString('At least one of the credentials sharing this label must be supplied'),
});

const TemplateListing = Type.Object({
  id: Type.String(),
  name: Type.String(),
  description: Type.String(),
  model_gateway: Type.Boolean(),
  credentials: Type.Array(CredentialListing),
});

const TemplateParams = Type.Object(
  // Any string: an unknown id is a 404, whatever it looks like.
  { id: Type.String({ minLength: 1, maxLength: 100 }) },
  { additionalProperties: false },
);

const errors = { 400: ProblemSchema, 401: ProblemSchema, 403: ProblemSchema, 404: ProblemSchema };

function listing(template: AgentTemplate) {
  return {
    id: template.id,
    name: template.name,
    description: template.description,
    model_gateway: template.modelGateway,
    credentials: template.credentials.map((credential) => ({
      name: credential.name,
      description: credential.description,
      required: credential.required,
      env: credential.env ?? null,
      provider: credential.provider ?? null,
      pattern: credential.pattern ?? null,
      pattern_description: credential.patternDescription ?? null,
      one_of: credential.oneOf ?? null,
    })),
  };
}

export function registerTemplateRoutes(app: App, deps: { templates: TemplateCatalog }): void {
  const { templates } = deps;
  const auth = { auth: 'user' as const };

  app.get(
    '/api/v1/templates',
    {
      config: auth,
      schema: {
        operationId: 'listTemplates',
        summary: 'Agent templates to onboard an agent from, with the credentials each takes',
        tags: ['templates'],
        response: { 200: Type.Object({ templates: Type.Array(TemplateListing) }), ...errors },
      },
    },
    async () => ({ templates: templates.list().map(listing) }),
  );

  app.get(
    '/api/v1/templates/:id',
    {
      config: auth,
      schema: {
        operationId: 'getTemplate',
        summary: 'One agent template and the credentials it takes',
        tags: ['templates'],
        params: TemplateParams,
        response: { 200: TemplateListing, ...errors },
      },
    },
    async (request, reply) => {
      // The id is attacker-controlled: the catalog looks it up in a Map, never on an object.
      const template = templates.get(request.params.id);
      if (template === undefined) return sendProblem(request, reply, 'not_found');
      return listing(template);
    },
  );
}
