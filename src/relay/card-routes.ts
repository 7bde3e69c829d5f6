import type { FastifyReply } from 'fastify';
import type { Sql } from 'postgres';
import { Type } from 'typebox';
import { signedIn } from '../accounts/principal.ts';
import { AGENT_ROUTE_ERRORS } from '../agents/routes.ts';
import type { TemplateCatalog } from '../agents/templates.ts';
import { AppError } from '../errors.ts';
import type { App } from '../http/app.ts';
import { ProblemSchema } from '../http/problems.ts';
import { curlExample, IdParams } from '../http/schemas.ts';
import { findPublishedAgent, type PublishAuthority, setCardPublished } from './card-publication.ts';
import { type CardSigner, JWKS_PATH } from './card-signing.ts';
import { buildAgentCard, type CardAgent, RELAY_SECURITY_SCHEME, type SignedAgentCard } from './cards.ts';

// The agent cards (RLY-1, RLY-13): served to anyone at /agents/:handle/card.json
// and at A2A's well-known path under the agent's relay endpoint, signed with
// the operator's relay key, whose public half is the JWK Set here; and the
// API switch that publishes or unpublishes a card. An unknown handle and an
// unpublished agent get the same 404: a card says nothing about agents that
// are not published.

const Str = Type.String();
const SignedCardSchema = Type.Object(
  {
    name: Str,
    description: Str,
    supportedInterfaces: Type.Array(Type.Object({ url: Str, protocolBinding: Str, protocolVersion: Str }), {
      description: 'The relay endpoint (A2A JSON-RPC) first',
    }),
    version: Str,
    capabilities: Type.Object({ streaming: Type.Boolean(), pushNotifications: Type.Boolean() }),
    securitySchemes: Type.Object({
      [RELAY_SECURITY_SCHEME]: Type.Object({
        httpAuthSecurityScheme: Type.Object({ scheme: Str, bearerFormat: Str, description: Str }),
      }),
    }),
    securityRequirements: Type.Array(
      Type.Object({
        schemes: Type.Object({ [RELAY_SECURITY_SCHEME]: Type.Object({ list: Type.Array(Str) }) }),
      }),
    ),
    defaultInputModes: Type.Array(Str),
    defaultOutputModes: Type.Array(Str),
    skills: Type.Array(Type.Object({ id: Str, name: Str, description: Str, tags: Type.Array(Str) })),
    signatures: Type.Array(
      Type.Object({
        protected: Type.String({ description: 'base64url JWS protected header: alg EdDSA, kid, typ, jku' }),
        signature: Type.String({
          description:
            'base64url Ed25519 signature over the header and the RFC 8785 form of the card without signatures (detached payload)',
        }),
      }),
    ),
  },
  { description: 'An A2A AgentCard (protocol 1.0), signed (RLY-13)' },
);

const JwksSchema = Type.Object(
  {
    keys: Type.Array(
      Type.Object({
        kty: Str,
        crv: Str,
        x: Str,
        kid: Type.String({ description: 'RFC 7638 thumbprint of the key' }),
        alg: Str,
        use: Str,
      }),
    ),
  },
  { description: 'The keys that sign agent cards (RFC 7517 JWK Set)' },
);

const HandleParams = Type.Object(
  { handle: Type.String({ minLength: 1, maxLength: 100 }) },
  { additionalProperties: false },
);

const UnpublishedSchema = Type.Object(
  { published: Type.Literal(false) },
  { additionalProperties: false, description: 'The card is not published' },
);

export interface CardRoutesDeps {
  readonly sql: Sql;
  readonly publicUrl: string;
  readonly templates: Pick<TemplateCatalog, 'get'>;
  readonly signer: CardSigner;
  readonly agents: PublishAuthority;
}

export function registerCardRoutes(app: App, deps: CardRoutesDeps): void {
  const { signer } = deps;

  /** The signed card of an agent, built fresh on every read: nothing outlives an unpublish. */
  const signedCard = (agent: CardAgent): SignedAgentCard =>
    signer.sign(buildAgentCard(deps.publicUrl, agent, deps.templates.get(agent.template)));

  const serveCard = async (handle: string, reply: FastifyReply) => {
    const agent = await findPublishedAgent(deps.sql, handle);
    if (agent === undefined) throw new AppError('not_found', 'no published agent card with this handle');
    // Readers revalidate: an unpublished card must not live on in a cache.
    return reply.header('cache-control', 'no-cache').send(signedCard(agent));
  };

  const publicCard = (operationId: string, summary: string) => ({
    config: { auth: 'none' as const },
    schema: {
      operationId,
      summary,
      tags: ['relay'],
      params: HandleParams,
      response: { 200: SignedCardSchema, 400: ProblemSchema, 404: ProblemSchema, 503: ProblemSchema },
    },
  });

  app.get(
    '/agents/:handle/card.json',
    publicCard('getAgentCard', "A published agent's signed A2A card; 404 for any other handle"),
    async (request, reply) => serveCard(request.params.handle, reply),
  );

  app.get(
    '/a2a/:handle/.well-known/agent-card.json',
    publicCard(
      'getA2aAgentCard',
      "The same card at A2A's well-known path under the agent's relay endpoint, for A2A discovery",
    ),
    async (request, reply) => serveCard(request.params.handle, reply),
  );

  app.get(
    JWKS_PATH,
    {
      config: { auth: 'none' },
      schema: {
        operationId: 'getRelayJwks',
        summary: 'The public keys that sign agent cards (kid: RFC 7638 thumbprint)',
        tags: ['relay'],
        response: { 200: JwksSchema },
      },
    },
    async (_request, reply) => reply.header('cache-control', 'public, max-age=300').send(signer.jwks),
  );

  app.put(
    '/api/v1/agents/:id/card',
    {
      config: { auth: 'user' },
      schema: {
        operationId: 'setAgentCardPublished',
        summary:
          "Publish or unpublish the agent's A2A card (off by default); answers the card as served, or {published: false}",
        tags: ['relay'],
        ...curlExample('PUT', '/api/v1/agents/{id}/card', { published: true }),
        params: IdParams,
        body: Type.Object({ published: Type.Boolean() }, { additionalProperties: false }),
        response: { 200: Type.Union([SignedCardSchema, UnpublishedSchema]), ...AGENT_ROUTE_ERRORS },
      },
    },
    async (request) => {
      const { published } = request.body;
      const agent = await request.withTenant((tx) =>
        setCardPublished(tx, deps.agents, signedIn(request), request.params.id, published),
      );
      return published ? signedCard(agent) : { published: false as const };
    },
  );
}
