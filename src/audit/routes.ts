import type { Readable } from 'node:stream';
import type { Sql } from 'postgres';
import { Type } from 'typebox';
import { signedIn } from '../accounts/principal.ts';
import { authorize } from '../accounts/roles.ts';
import type { App } from '../http/app.ts';
import { ProblemSchema } from '../http/problems.ts';
import { curlExample } from '../http/schemas.ts';
import { exportAuditLog, listAuditEvents, MAX_PAGE, readAuditHead } from './log.ts';

// /api/v1/audit: a tenant reads and exports its own audit log (AUD-6). HTTP
// only: every route is auth 'user' and reads in a transaction bound to the
// principal's tenant, where row-level security shows that tenant's chain and
// nothing else. Response schemas are allowlists. Reading is for roles with
// 'audit.read' (src/accounts/roles.ts): owners and admins.

const DEFAULT_PAGE = 100;
/** An action as events carry it: lowercase dotted words (src/audit/event.ts). */
const ACTION_PATTERN = '^[a-z][a-z0-9_]*(\\.[a-z][a-z0-9_]*)+$';
const Hex32 = Type.String({ pattern: '^[0-9a-f]{64}$' });

const AuditEventSchema = Type.Object({
  seq: Type.Integer({ minimum: 1 }),
  ts: Type.String({ format: 'date-time' }),
  actor: Type.String(),
  action: Type.String(),
  target: Type.Union([Type.String(), Type.Null()]),
  data: Type.Object({}, { additionalProperties: true }),
  prev_hash: Hex32,
  hash: Hex32,
  canonical: Type.String({ description: 'The exact text hashed: RFC 8785 JCS of the event' }),
});

const EventsQuery = Type.Object(
  {
    after: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: Number.MAX_SAFE_INTEGER,
        description: 'Events with a greater seq',
      }),
    ),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_PAGE, default: DEFAULT_PAGE })),
    action: Type.Optional(Type.String({ maxLength: 128, pattern: ACTION_PATTERN })),
  },
  { additionalProperties: false },
);

const errors = { 400: ProblemSchema, 401: ProblemSchema, 403: ProblemSchema, 429: ProblemSchema };

export function registerAuditApi(app: App, deps: { sql: Sql }): void {
  const auth = { auth: 'user' as const };

  app.get(
    '/api/v1/audit/events',
    {
      config: auth,
      schema: {
        operationId: 'listAuditEvents',
        summary: "A page of the tenant's audit events in seq order, after `after`",
        tags: ['audit'],
        ...curlExample('GET', '/api/v1/audit/events?limit=10'),
        querystring: EventsQuery,
        response: {
          200: Type.Object({
            events: Type.Array(AuditEventSchema),
            next_after: Type.Union([Type.Integer(), Type.Null()], {
              description: 'Pass as `after` for the next page; null when this page reached the head',
            }),
          }),
          ...errors,
        },
      },
    },
    async (request) => {
      authorize(signedIn(request), 'audit.read');
      // after, limit and action are attacker-controlled: checked by the schema, then only bound parameters.
      const { after = 0, action } = request.query;
      const limit = request.query.limit ?? DEFAULT_PAGE;
      // One more than asked for tells whether another page follows.
      const events = await request.withTenant((tx) =>
        listAuditEvents(tx, { after, action, limit: limit + 1 }),
      );
      const page = events.slice(0, limit);
      const last = page.at(-1);
      return { events: page, next_after: events.length > limit && last !== undefined ? last.seq : null };
    },
  );

  app.get(
    '/api/v1/audit/head',
    {
      config: auth,
      schema: {
        operationId: 'getAuditHead',
        summary: "The tenant's chain head: the last seq and its hash (seq 0 and 64 zeros before any event)",
        tags: ['audit'],
        response: { 200: Type.Object({ seq: Type.Integer({ minimum: 0 }), hash: Hex32 }), ...errors },
      },
    },
    async (request) => {
      authorize(signedIn(request), 'audit.read');
      return request.withTenant(readAuditHead);
    },
  );

  app.get(
    '/api/v1/audit/export',
    {
      config: auth,
      schema: {
        operationId: 'exportAuditLog',
        summary:
          "The tenant's whole audit log as JSON lines (application/x-ndjson), one event per line in seq order, " +
          'with tenant, seq, canonical, prev_hash and hash: everything an offline verifier needs',
        tags: ['audit'],
        response: {
          200: {
            description: 'One JSON object per line',
            // Sent as a stream: the schema documents the body, the type lets the handler send a Readable.
            content: { 'application/x-ndjson': { schema: Type.Unsafe<Readable>(Type.String()) } },
          },
          ...errors,
        },
      },
    },
    async (request, reply) => {
      const principal = signedIn(request);
      authorize(principal, 'audit.read');
      const { user } = principal;
      return reply
        .header('cache-control', 'no-store')
        .header('content-disposition', `attachment; filename="audit-${user.tenant_id}.jsonl"`)
        .type('application/x-ndjson')
        .send(exportAuditLog(deps.sql, user.tenant_id));
    },
  );
}
