import { Type } from 'typebox';
import { signedIn } from '../../accounts/principal.ts';
import { authorize } from '../../accounts/roles.ts';
import type { App } from '../../http/app.ts';
import { NextAfter, type PageCursors, PageQuery, readPage } from '../../http/page-cursor.ts';
import { ProblemSchema } from '../../http/problems.ts';
import { Id, IdParams, Timestamp } from '../../http/schemas.ts';
import { AgentsError } from '../errors.ts';
import { agentCreator, listEgressPage } from './records.ts';

// GET /api/v1/agents/:id/egress (AGT-4): the connections an agent made or
// tried through its egress proxy, newest first. HTTP only; the read runs in
// the principal's tenant transaction, where RLS shows that tenant's rows and
// nothing else. The response schema is an allowlist of the record fields.

const EgressConnection = Type.Object({
  id: Id,
  host: Type.String({ description: 'The name or IP address the agent asked for' }),
  port: Type.Integer({ minimum: 0, maximum: 65535 }),
  method: Type.Union([Type.Literal('CONNECT'), Type.Literal('HTTP')], {
    description: 'CONNECT: a tunnel (HTTPS and other TLS); HTTP: one plain-HTTP request forwarded',
  }),
  allowed: Type.Boolean({ description: 'Whether the proxy connected (false: refused by policy or failed)' }),
  reason: Type.Union([Type.String(), Type.Null()], {
    description: 'Why it was refused or ended abnormally; null for a connection that ended normally',
  }),
  bytes_out: Type.Integer({ minimum: 0, description: 'Bytes from the agent to the destination' }),
  bytes_in: Type.Integer({ minimum: 0, description: 'Bytes from the destination to the agent' }),
  duration_ms: Type.Integer({ minimum: 0 }),
  started_at: Timestamp,
});

const errors = { 400: ProblemSchema, 401: ProblemSchema, 403: ProblemSchema, 404: ProblemSchema };

export function registerEgressRoutes(app: App, deps: { cursors: PageCursors }): void {
  app.get(
    '/api/v1/agents/:id/egress',
    {
      config: { auth: 'user' as const },
      schema: {
        operationId: 'listEgressConnections',
        summary: "An agent's egress connections and refused attempts, newest first",
        tags: ['agents'],
        params: IdParams,
        querystring: PageQuery,
        response: {
          200: Type.Object({ connections: Type.Array(EgressConnection), next_after: NextAfter }),
          ...errors,
        },
      },
    },
    async (request) => {
      const principal = signedIn(request);
      // id, after and limit are attacker-controlled: the schema checks them, the cursor must carry
      // our MAC for this agent's list in this tenant, and all of them reach SQL as bound parameters only.
      const id = request.params.id;
      const scope = { list: 'egress', tenantId: principal.user.tenant_id, of: id };
      const page = await request.withTenant(async (tx) => {
        const agent = await agentCreator(tx, id);
        if (agent === undefined) throw new AgentsError('not_found', 'no such agent');
        authorize(principal, 'agent.address', agent.created_by);
        return readPage(deps.cursors, scope, request.query, (at) => listEgressPage(tx, id, at));
      });
      return { connections: page.rows, next_after: page.next };
    },
  );
}
