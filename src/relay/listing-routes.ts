import type { Sql } from 'postgres';
import { Type } from 'typebox';
import { signedIn } from '../accounts/principal.ts';
import { AGENT_ROUTE_ERRORS } from '../agents/routes.ts';
import type { TemplateCatalog } from '../agents/templates.ts';
import type { App } from '../http/app.ts';
import { NextAfter, type PageCursors } from '../http/page-cursor.ts';
import { ProblemSchema } from '../http/problems.ts';
import { curlExample, IdParams, NullableTimestamp, Timestamp } from '../http/schemas.ts';
import type { PublishAuthority } from './card-publication.ts';
import {
  DIRECTORY_DEFAULT_PAGE,
  DIRECTORY_MAX_PAGE,
  MAX_DIRECTORY_QUERY,
  readDirectory,
} from './directory.ts';
import { requestListing, withdrawListing } from './listings.ts';

// The directory's JSON surface (RLY-1): an agent's managers ask for its
// listing and withdraw it; any signed-in user (session or API token, of any
// tenant) searches the directory. The operator's review is the `enclave
// relay` command and /operator/listings, not an API. Response schemas are
// allowlists: a directory entry has no id, tenant, owner or email to leak.

const Str = Type.String();

const ListingSchema = Type.Object(
  {
    state: Type.Union([
      Type.Literal('pending'),
      Type.Literal('approved'),
      Type.Literal('rejected'),
      Type.Literal('withdrawn'),
    ]),
    reason: Type.Union([Str, Type.Null()], {
      description: "The operator's reason for a rejection, if given",
    }),
    requested_at: Timestamp,
    decided_at: NullableTimestamp,
    listed: Type.Boolean({ description: 'In the directory now: approved, published and unchanged since' }),
    changed_since_approval: Type.Boolean({
      description:
        'Approved, but the name, description or template changed since: out of the directory until re-reviewed',
    }),
  },
  { description: "An agent's directory listing (RLY-1)" },
);

export const DirectoryQuerySchema = Type.Object(
  {
    q: Type.Optional(
      Type.String({
        maxLength: MAX_DIRECTORY_QUERY,
        pattern: '^[^\\u0000-\\u001f\\u007f]*$',
        description: `Case-insensitive text in the handle, name, description or skills; up to ${MAX_DIRECTORY_QUERY} characters`,
      }),
    ),
    after: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 256,
        description:
          'The `next_after` of the previous page, of the same search; any other is 400 cursor_invalid',
      }),
    ),
    limit: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: DIRECTORY_MAX_PAGE,
        default: DIRECTORY_DEFAULT_PAGE,
        description: `Entries per page, 1 to ${DIRECTORY_MAX_PAGE}`,
      }),
    ),
  },
  { additionalProperties: false },
);

const DirectoryEntrySchema = Type.Object({
  handle: Str,
  name: Str,
  description: Str,
  skills: Type.Array(Type.Object({ id: Str, name: Str, description: Str, tags: Type.Array(Str) })),
  card_url: Type.String({ description: "The agent's signed A2A card" }),
  listed_at: Timestamp,
});

export interface ListingRoutesDeps {
  readonly sql: Sql;
  readonly cursors: PageCursors;
  readonly templates: Pick<TemplateCatalog, 'get' | 'list'>;
  readonly publicUrl: string;
  readonly agents: PublishAuthority;
}

export function registerListingRoutes(app: App, deps: ListingRoutesDeps): void {
  const listing = {
    config: { auth: 'user' as const },
    schema: {
      tags: ['relay'],
      params: IdParams,
      response: { 200: ListingSchema, ...AGENT_ROUTE_ERRORS, 409: ProblemSchema },
    },
  };

  app.post(
    '/api/v1/agents/:id/listing',
    {
      ...listing,
      schema: {
        ...listing.schema,
        operationId: 'requestAgentListing',
        summary:
          "Ask for the agent's directory listing (its card must be published: else 409); an operator reviews it",
        ...curlExample('POST', '/api/v1/agents/{id}/listing'),
      },
    },
    async (request) =>
      request.withTenant((tx) => requestListing(tx, deps.agents, signedIn(request), request.params.id)),
  );

  app.delete(
    '/api/v1/agents/:id/listing',
    {
      ...listing,
      schema: {
        ...listing.schema,
        operationId: 'withdrawAgentListing',
        summary: "Withdraw the agent's directory listing: out of the review queue and the directory at once",
      },
    },
    async (request) =>
      request.withTenant((tx) => withdrawListing(tx, deps.agents, signedIn(request), request.params.id)),
  );

  app.get(
    '/api/v1/directory',
    {
      config: { auth: 'user' },
      schema: {
        operationId: 'searchDirectory',
        summary: 'A page of the agent directory (operator-approved published cards), newest listing first',
        tags: ['relay'],
        querystring: DirectoryQuerySchema,
        response: {
          200: Type.Object({ entries: Type.Array(DirectoryEntrySchema), next_after: NextAfter }),
          400: ProblemSchema,
          401: ProblemSchema,
        },
      },
    },
    async (request) => readDirectory(deps, signedIn(request).user.tenant_id, request.query),
  );
}
