import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { flashOwner, frameFor } from '../accounts/dashboard-routes.ts';
import { shownError } from '../accounts/page-routes.ts';
import type { CookieSettings } from '../accounts/principal.ts';
import { signedIn } from '../accounts/principal.ts';
import { may } from '../accounts/roles.ts';
import { createSecretFlash } from '../accounts/secret-flash.ts';
import type { Principal } from '../accounts/service.ts';
import { isUuid, type TenantSql } from '../db/tenant.ts';
import { AppError } from '../errors.ts';
import type { App } from '../http/app.ts';
import { boundTenant, type PageCursors } from '../http/page-cursor.ts';
import { Id, IdParams } from '../http/schemas.ts';
import { confirmPage, forbiddenPage, notFoundPage } from '../web/dashboard-pages.ts';
import { bodyText, sendPage } from '../web/forms.ts';
import { badCursorPage, readListPage } from '../web/list-pages.ts';
import { getDelivery, listDeliveries, replayFailed, replayOne } from './delivery-log.ts';
import { deliveryLogSection } from './delivery-pages.ts';
import { MAX_CALLBACK_URL_LENGTH } from './destination.ts';
import {
  type Choice,
  type EndpointFormValues,
  endpointPage,
  endpointsPage,
  eventField,
  type FormProblemShown,
  type ShownOnce,
  type SideNames,
} from './endpoint-pages.ts';
import {
  CALLBACK_EVENT_TYPES,
  type CallbackEndpoint,
  type CallbackEndpoints,
  type CallbackEventType,
  type ShownSecret,
} from './endpoints.ts';

// /dashboard/webhooks (RLY-7): the callback endpoints from the dashboard.
// Pages only; the rules (who may, URL checks, secrets) live in endpoints.ts
// and delivery-log.ts, as for the API. An unknown id, a malformed one and
// another tenant's are the same 404 page (TEN-1); a role that may not manage
// the endpoint gets the Not allowed page. Secrets go through the secret
// flash: shown once, on the GET the form redirects to.

const user = { auth: 'user' as const };
const hide = { hide: true } as const;

/** Fixed notices a redirect may name (?notice=): the query is attacker-controlled. */
const NOTICES = {
  saved: 'The endpoint was saved.',
  enabled: 'The endpoint is enabled again; its run of failures starts from zero.',
  replayed: 'The delivery was queued again, with the same webhook-id.',
  pending: 'That delivery is still being attempted: it was not replayed.',
  deleted: 'The endpoint and its delivery log were deleted.',
} as const;

function noticeOf(query: unknown): string | undefined {
  const { notice, requeued } = (query ?? {}) as { notice?: unknown; requeued?: unknown };
  if (typeof requeued === 'string' && /^\d{1,4}$/.test(requeued)) {
    return `${requeued} failed ${requeued === '1' ? 'delivery was' : 'deliveries were'} queued again.`;
  }
  return typeof notice === 'string' && Object.hasOwn(NOTICES, notice)
    ? NOTICES[notice as keyof typeof NOTICES]
    : undefined;
}

const fieldProblem = (field: string, message: string) =>
  new AppError('validation_failed', message, { field });

/** What the create and change forms sent; each checkbox is its own key (a form carries a key once). */
function formValues(body: unknown): EndpointFormValues {
  const text = (name: string, max: number) => {
    const value = bodyText(body, name, max)?.trim();
    return value === '' ? undefined : value;
  };
  return {
    url: text('url', MAX_CALLBACK_URL_LENGTH),
    description: bodyText(body, 'description', 200),
    eventTypes: CALLBACK_EVENT_TYPES.filter((type) => bodyText(body, eventField(type)) !== undefined),
    agentId: text('agent_id', 36),
    connectionId: text('connection_id', 36),
    signV1a: bodyText(body, 'sign_v1a') !== undefined,
  };
}

/** The checks a form makes before the service's own: a URL, one event at least, a one-line description. */
function checkForm(body: unknown, values: EndpointFormValues): void {
  if (values.url === undefined) {
    throw fieldProblem('url', `Give the URL, at most ${MAX_CALLBACK_URL_LENGTH} characters.`);
  }
  if ((values.eventTypes ?? []).length === 0) throw fieldProblem('event_types', 'Choose at least one event.');
  if (
    values.description === undefined &&
    bodyText(body, 'description', Number.MAX_SAFE_INTEGER) !== undefined
  ) {
    throw fieldProblem('description', 'The description is at most 200 characters.');
  }
  if (values.description !== undefined && /[\r\n]/.test(values.description)) {
    throw fieldProblem('description', 'The description is one line.');
  }
  for (const name of ['agentId', 'connectionId'] as const) {
    const id = values[name];
    if (id !== undefined && !isUuid(id)) {
      throw fieldProblem(name === 'agentId' ? 'agent_id' : 'connection_id', 'Choose from the list.');
    }
  }
}

/** Handles of the agents and connection targets the endpoints listen on, by id. */
async function sideNames(tx: TenantSql, endpoints: readonly CallbackEndpoint[]): Promise<SideNames> {
  const agentIds = endpoints.flatMap((e) => (e.agent_id === null ? [] : [e.agent_id]));
  const connectionIds = endpoints.flatMap((e) => (e.connection_id === null ? [] : [e.connection_id]));
  const rows = await tx<{ id: string; name: string }[]>`
    select id, handle as name from agents where ${boundTenant(tx)} and id = any(${agentIds}::uuid[])
    union all
    select id, target_handle as name from relay_connections
    where ${boundTenant(tx)} and side = 'outgoing' and id = any(${connectionIds}::uuid[])`;
  return new Map(rows.map((row) => [row.id, row.name]));
}

/** The agents and approved outgoing connections the principal may register endpoints for (relay.approve's rule). */
async function choices(
  tx: TenantSql,
  principal: Principal,
): Promise<{ agents: Choice[]; connections: Choice[] }> {
  const mine = may(principal, 'relay.approve') ? tx`` : tx`and created_by = ${principal.user.id}::uuid`;
  const agents = await tx<{ id: string; handle: string; name: string }[]>`
    select id, handle, name from agents where ${boundTenant(tx)} ${mine} order by handle limit 500`;
  const requested = may(principal, 'relay.approve')
    ? tx``
    : tx`and requester_user_id = ${principal.user.id}::uuid`;
  const connections = await tx<{ id: string; target_handle: string; requester_handle: string | null }[]>`
    select id, target_handle, requester_handle from relay_connections
    where ${boundTenant(tx)} and side = 'outgoing' and state = 'approved' ${requested}
    order by target_handle limit 500`;
  return {
    agents: agents.map((a): Choice => [a.id, `${a.handle} (${a.name})`]),
    connections: connections.map(
      (c): Choice => [
        c.id,
        `to ${c.target_handle}${c.requester_handle === null ? '' : ` as ${c.requester_handle}`}`,
      ],
    ),
  };
}

const shownOnce = ({ endpoint, signing_secret }: ShownSecret): ShownOnce => ({
  id: endpoint.id,
  secret: signing_secret,
  publicKey: endpoint.public_key,
});

/** The agent the agent page's link names (?agent_id=), to preselect in the form; the select offers only the principal's own. */
function preselected(query: unknown): string | undefined {
  const agentId = (query as { agent_id?: unknown } | undefined)?.agent_id;
  return isUuid(agentId) ? agentId : undefined;
}

/** `datetime-local` (read as UTC) or a full ISO timestamp; undefined when neither. */
function sinceOf(body: unknown): Date | undefined {
  const text = bodyText(body, 'since', 40)?.trim() ?? '';
  const local = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?$/.test(text);
  if (!local && !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/.test(text)) {
    return undefined;
  }
  const at = new Date(local ? `${text}Z` : text);
  return Number.isNaN(at.getTime()) ? undefined : at;
}

export function registerCallbackEndpointPages(
  app: App,
  deps: { endpoints: CallbackEndpoints; cursors: PageCursors; sessionKey: string; cookies: CookieSettings },
): void {
  const flash = createSecretFlash<ShownOnce>('webhook-endpoint', deps.sessionKey, deps.cookies);

  const notFound = async (request: FastifyRequest, reply: FastifyReply) =>
    sendPage(reply, 404, notFoundPage(await frameFor(request), 'webhook endpoint'));

  /** The 404 page (unknown, malformed or another tenant's: TEN-1) or the Not allowed page; undefined otherwise. */
  const refused = async (request: FastifyRequest, reply: FastifyReply, error: unknown) => {
    const shown = shownError(reply, error);
    if (shown.status === 404) return notFound(request, reply);
    if (shown.status === 403) {
      return sendPage(reply, 403, forbiddenPage(await frameFor(request), shown.message));
    }
    return undefined;
  };

  const guarded = async (request: FastifyRequest, reply: FastifyReply, act: () => Promise<FastifyReply>) => {
    try {
      return await act();
    } catch (error) {
      return (await refused(request, reply, error)) ?? Promise.reject(error);
    }
  };

  const showList = async (
    request: FastifyRequest,
    reply: FastifyReply,
    status: number,
    extra: { values?: EndpointFormValues; problem?: FormProblemShown } = {},
  ) => {
    const principal = signedIn(request);
    const scope = { list: 'webhook-endpoints', tenantId: principal.user.tenant_id, of: principal.user.id };
    // A failed POST shows the first page again: its own query is not a page link.
    const query = status === 200 ? request.query : {};
    const read = await request.withTenant(async (tx) => {
      const list = await readListPage(deps.cursors, scope, '/dashboard/webhooks', query, (at) =>
        deps.endpoints.list(tx, principal, at),
      );
      if (list === undefined) return undefined;
      return { list, names: await sideNames(tx, list.rows), ...(await choices(tx, principal)) };
    });
    const frame = await frameFor(request);
    if (read === undefined) {
      return sendPage(reply, 400, badCursorPage(frame, 'webhook endpoints', '/dashboard/webhooks'));
    }
    return sendPage(
      reply,
      status,
      endpointsPage(frame, {
        endpoints: read.list.rows,
        pager: read.list.pager,
        names: read.names,
        agents: read.agents,
        connections: read.connections,
        notice: status === 200 ? noticeOf(request.query) : undefined,
        values: { agentId: preselected(request.query) },
        ...extra,
      }),
    );
  };

  app.get('/dashboard/webhooks', { config: user, schema: hide }, (request, reply) =>
    showList(request, reply, 200),
  );

  app.post('/dashboard/webhooks', { config: user, schema: hide }, async (request, reply) => {
    const principal = signedIn(request);
    const values = formValues(request.body);
    try {
      checkForm(request.body, values);
      const url = await deps.endpoints.checkUrl(values.url ?? '');
      const created = await request.withTenant((tx) =>
        deps.endpoints.create(tx, principal, {
          url,
          eventTypes: values.eventTypes as CallbackEventType[],
          agentId: values.agentId,
          connectionId: values.connectionId,
          description: values.description,
          signV1a: values.signV1a,
        }),
      );
      flash.put(reply, flashOwner(principal), shownOnce(created));
      return reply.redirect(`/dashboard/webhooks/${created.endpoint.id}`, 303);
    } catch (error) {
      const shown = shownError(reply, error);
      return showList(request, reply, shown.status, {
        values,
        problem: { field: shown.field, message: shown.message },
      });
    }
  });

  const ById = { config: user, attachValidation: true, schema: { ...hide, params: IdParams } };
  type ById = FastifyRequest<{ Params: { id: string } }>;

  const showEndpoint = async (
    request: ById,
    reply: FastifyReply,
    status: number,
    extra: { values?: EndpointFormValues; problem?: FormProblemShown } = {},
  ) => {
    const principal = signedIn(request);
    const id = request.params.id;
    const base = `/dashboard/webhooks/${id}`;
    const query = (status === 200 ? request.query : {}) as { delivery?: unknown };
    const deliveryId =
      typeof query.delivery === 'string' && isUuid(query.delivery) ? query.delivery : undefined;
    const scope = { list: 'webhook-deliveries', tenantId: principal.user.tenant_id, of: id };
    const read = await request.withTenant(async (tx) => {
      const endpoint = await deps.endpoints.get(tx, principal, id);
      const log = await readListPage(deps.cursors, scope, base, query, (at) =>
        listDeliveries(tx, principal, id, at),
      );
      const detail = deliveryId === undefined ? undefined : await getDelivery(tx, principal, deliveryId);
      // A delivery of another endpoint is not this page's: the same 404 as an unknown one.
      if (detail !== undefined && detail.endpoint_id !== id) {
        throw new AppError('not_found', 'no such webhook delivery');
      }
      return { endpoint, log, detail, names: await sideNames(tx, [endpoint]) };
    });
    const frame = await frameFor(request);
    if (read.log === undefined) return sendPage(reply, 400, badCursorPage(frame, 'deliveries', base));
    return sendPage(
      reply,
      status,
      endpointPage(frame, {
        endpoint: read.endpoint,
        names: read.names,
        deliveryLog: deliveryLogSection({
          base,
          deliveries: read.log.rows,
          nextAfter: read.log.pager.next,
          detail: read.detail,
        }),
        deliveryId: read.detail?.id,
        shown: flash.take(request, reply, flashOwner(principal)),
        notice: status === 200 ? noticeOf(request.query) : undefined,
        ...extra,
      }),
    );
  };

  app.get('/dashboard/webhooks/:id', ById, async (request, reply) => {
    if (request.validationError !== undefined) return notFound(request, reply);
    return guarded(request, reply, () => showEndpoint(request, reply, 200));
  });

  // Change the URL (checked again, RLY-12), the events or the description.
  app.post('/dashboard/webhooks/:id', ById, async (request, reply) => {
    if (request.validationError !== undefined) return notFound(request, reply);
    const values = formValues(request.body);
    return guarded(request, reply, async () => {
      try {
        checkForm(request.body, values);
        const url = await deps.endpoints.checkUrl(values.url ?? '');
        await request.withTenant((tx) =>
          deps.endpoints.update(tx, signedIn(request), request.params.id, {
            url,
            eventTypes: values.eventTypes as CallbackEventType[],
            description: values.description ?? '',
          }),
        );
      } catch (error) {
        const shown = shownError(reply, error);
        if (shown.status === 404 || shown.status === 403) throw error;
        return showEndpoint(request, reply, shown.status, {
          values,
          problem: { field: shown.field, message: shown.message },
        });
      }
      return reply.redirect(`/dashboard/webhooks/${request.params.id}?notice=saved`, 303);
    });
  });

  app.post('/dashboard/webhooks/:id/enable', ById, async (request, reply) => {
    if (request.validationError !== undefined) return notFound(request, reply);
    return guarded(request, reply, async () => {
      await request.withTenant((tx) => deps.endpoints.enable(tx, signedIn(request), request.params.id));
      return reply.redirect(`/dashboard/webhooks/${request.params.id}?notice=enabled`, 303);
    });
  });

  app.post('/dashboard/webhooks/:id/replay-failed', ById, async (request, reply) => {
    if (request.validationError !== undefined) return notFound(request, reply);
    const principal = signedIn(request);
    const { id } = request.params;
    return guarded(request, reply, async () => {
      const since = sinceOf(request.body);
      if (since === undefined) {
        return showEndpoint(request, reply, 400, {
          problem: { field: 'since', message: 'Give a date and time, such as 2026-01-01T00:00.' },
        });
      }
      const requeued = await request.withTenant((tx) =>
        replayFailed(tx, principal, principal.user.tenant_id, id, since),
      );
      return reply.redirect(`/dashboard/webhooks/${id}?requeued=${requeued}`, 303);
    });
  });

  const DeliveryParams = Type.Object({ id: Id, delivery_id: Id });
  app.post(
    '/dashboard/webhooks/:id/deliveries/:delivery_id/replay',
    { config: user, attachValidation: true, schema: { ...hide, params: DeliveryParams } },
    async (request, reply) => {
      if (request.validationError !== undefined) return notFound(request, reply);
      const principal = signedIn(request);
      const { id, delivery_id } = request.params;
      return guarded(request, reply, async () => {
        const replayed = await request.withTenant(async (tx) => {
          const delivery = await getDelivery(tx, principal, delivery_id);
          if (delivery.endpoint_id !== id) throw new AppError('not_found', 'no such webhook delivery');
          return replayOne(tx, principal, principal.user.tenant_id, delivery_id);
        });
        return reply.redirect(
          `/dashboard/webhooks/${id}?notice=${replayed ? 'replayed' : 'pending'}&delivery=${delivery_id}`,
          303,
        );
      });
    },
  );

  // Rotating and deleting are confirmed first, each on a page of its own (works without JavaScript).
  const ACTIONS = {
    rotate: {
      title: 'Rotate the signing secret',
      consequence: (url: string) =>
        `A new secret for ${url} is shown once. The current one keeps signing for 24 hours beside it (both signatures are sent); update your receiver before then.`,
      button: 'Rotate secret',
      act: async (request: ById, reply: FastifyReply) => {
        const principal = signedIn(request);
        const rotated = await request.withTenant((tx) =>
          deps.endpoints.rotateSecret(tx, principal, request.params.id),
        );
        flash.put(reply, flashOwner(principal), shownOnce(rotated));
        return reply.redirect(`/dashboard/webhooks/${request.params.id}`, 303);
      },
    },
    delete: {
      title: 'Delete the webhook endpoint',
      consequence: (url: string) =>
        `Events will no longer be sent to ${url}, and its delivery log is deleted with it. This cannot be undone.`,
      button: 'Delete endpoint',
      act: async (request: ById, reply: FastifyReply) => {
        await request.withTenant((tx) => deps.endpoints.remove(tx, signedIn(request), request.params.id));
        return reply.redirect('/dashboard/webhooks?notice=deleted', 303);
      },
    },
  } as const;

  for (const [name, action] of Object.entries(ACTIONS)) {
    app.get(`/dashboard/webhooks/:id/${name}`, ById, async (request, reply) => {
      if (request.validationError !== undefined) return notFound(request, reply);
      return guarded(request, reply, async () => {
        const endpoint = await request.withTenant((tx) =>
          deps.endpoints.get(tx, signedIn(request), request.params.id),
        );
        const base = `/dashboard/webhooks/${endpoint.id}`;
        return sendPage(
          reply,
          200,
          confirmPage(await frameFor(request), {
            title: action.title,
            consequence: action.consequence(endpoint.url),
            action: `${base}/${name}`,
            button: action.button,
            back: base,
          }),
        );
      });
    });
    app.post(`/dashboard/webhooks/:id/${name}`, ById, async (request, reply) => {
      if (request.validationError !== undefined) return notFound(request, reply);
      return guarded(request, reply, () => action.act(request, reply));
    });
  }
}
