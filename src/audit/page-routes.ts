import { Type } from 'typebox';
import { frameFor } from '../accounts/dashboard-routes.ts';
import { signedIn } from '../accounts/principal.ts';
import { may } from '../accounts/roles.ts';
import { SERVICE_QUERY_ACTION } from '../db/tenant.ts';
import type { App } from '../http/app.ts';
import { AUDIT_PAGE_SIZE, auditPage } from '../web/audit-page.ts';
import { forbiddenPage } from '../web/dashboard-pages.ts';
import { sendPage } from '../web/forms.ts';
import { latestCheckpoint, latestTenantLeaf } from './checkpoint-log.ts';
import {
  countAuditEventsBetween,
  hasAuditEventsBetween,
  listAuditActions,
  listAuditEvents,
  readAuditHead,
} from './log.ts';
import { namesForEvents } from './page-names.ts';

// /dashboard/audit (AUD-6): the signed-in tenant's audit log as a page. Reads
// run in a transaction bound to the principal's tenant; row-level security
// keeps them to its chain. system.service_query events (a service reading on
// a tenant's behalf) are many and rarely what one looks for: they are left out
// of the pages unless ?service_queries=shown or the filter asks for them, and
// they are left out in the query, so a page still holds up to a page of events.

const ACTION = /^[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+$/;
const Seq = (minimum: number) => Type.Integer({ minimum, maximum: Number.MAX_SAFE_INTEGER });
const PageQuery = Type.Object(
  {
    after: Type.Optional(Seq(0)),
    before: Type.Optional(Seq(1)),
    /** Empty: every action (the filter's first choice). */
    action: Type.Optional(Type.String({ maxLength: 128 })),
    service_queries: Type.Optional(Type.Literal('shown')),
  },
  { additionalProperties: false },
);

export function registerAuditPages(app: App): void {
  app.get(
    '/dashboard/audit',
    { config: { auth: 'user' }, attachValidation: true, schema: { hide: true, querystring: PageQuery } },
    async (request, reply) => {
      const frame = await frameFor(request);
      if (!may(signedIn(request), 'audit.read')) {
        return sendPage(reply, 403, forbiddenPage(frame, 'Only owners and admins read the audit log.'));
      }
      // The query is attacker-controlled: it only ever becomes bound parameters, after these checks.
      const { after, before, action: chosen } = request.query;
      const action = chosen === undefined || chosen === '' ? undefined : chosen;
      const serviceQueries = request.query.service_queries === 'shown';
      const without = serviceQueries || action !== undefined ? undefined : SERVICE_QUERY_ACTION;
      if (
        request.validationError !== undefined ||
        (after !== undefined && before !== undefined) ||
        (action !== undefined && !ACTION.test(action))
      ) {
        const [head, actions] = await request.withTenant(async (tx) => [
          await readAuditHead(tx),
          await listAuditActions(tx),
        ]);
        return sendPage(
          reply,
          400,
          auditPage(frame, {
            events: [],
            head,
            actions,
            names: new Map(),
            error: 'That page of the audit log does not exist.',
          }),
        );
      }
      const tenantId = request.principal?.user.tenant_id ?? '';
      const view = await request.withTenant(async (tx) => {
        const events =
          after === undefined
            ? await listAuditEvents(tx, { before, action, without, limit: AUDIT_PAGE_SIZE })
            : (await listAuditEvents(tx, { after, action, without, limit: AUDIT_PAGE_SIZE })).reverse();
        const newest = events[0]?.seq ?? (before === undefined ? undefined : before - 1);
        const oldest = events.at(-1)?.seq ?? (after === undefined ? undefined : after + 1);
        const checkpoint = await latestCheckpoint(tx);
        const leaf =
          checkpoint === undefined ? undefined : await latestTenantLeaf(tx, tenantId, checkpoint.size);
        // The folded events among this page's: from the next older shown event to the next newer one.
        const folded =
          without === undefined || newest === undefined || oldest === undefined
            ? 0
            : await countAuditEventsBetween(tx, { from: oldest, to: newest, action: without });
        return {
          names: await namesForEvents(tx, events),
          folded,
          head: await readAuditHead(tx),
          actions: await listAuditActions(tx),
          committed:
            checkpoint === undefined || leaf === undefined
              ? undefined
              : { seq: leaf.seq, checkpointSize: Number(checkpoint.size) },
          events,
          newer:
            newest !== undefined &&
            (await hasAuditEventsBetween(tx, { from: newest, to: null, action, without }))
              ? newest
              : undefined,
          older:
            oldest !== undefined &&
            (await hasAuditEventsBetween(tx, { from: 0, to: oldest, action, without }))
              ? oldest
              : undefined,
        };
      });
      const fold = action !== undefined ? undefined : serviceQueries ? 'shown' : 'folded';
      return sendPage(reply, 200, auditPage(frame, { ...view, action, serviceQueries: fold }));
    },
  );
}
