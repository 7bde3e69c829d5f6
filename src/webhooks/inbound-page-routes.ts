import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { flashOwner, frameFor } from '../accounts/dashboard-routes.ts';
import { shownError } from '../accounts/page-routes.ts';
import type { CookieSettings } from '../accounts/principal.ts';
import { signedIn } from '../accounts/principal.ts';
import { createSecretFlash } from '../accounts/secret-flash.ts';
import type { AgentsService } from '../agents/service.ts';
import { isAppError } from '../errors.ts';
import type { App } from '../http/app.ts';
import { Id, IdParams } from '../http/schemas.ts';
import { confirmPage, forbiddenPage, notFoundPage } from '../web/dashboard-pages.ts';
import { bodyText, sendPage } from '../web/forms.ts';
import type { InboundWebhooks } from './inbound.ts';
import { inboundWebhooksPage } from './inbound-pages.ts';

// /dashboard/agents/:id/inbound-webhooks (RLY-11): the page the agent page
// links to. Pages only; the rules live in inbound.ts, as for the API. A new
// secret goes through the secret flash (post/redirect/get): shown once.

const user = { auth: 'user' as const };
const hide = { hide: true } as const;

export function registerInboundWebhookPages(
  app: App,
  deps: {
    inbound: InboundWebhooks;
    agents: Pick<AgentsService, 'get'>;
    publicUrl: string;
    sessionKey: string;
    cookies: CookieSettings;
  },
): void {
  const created = createSecretFlash<{ url: string; secret: string; agentId: string }>(
    'inbound-webhook',
    deps.sessionKey,
    deps.cookies,
  );
  const urlOf = (id: string) => new URL(`/hooks/${id}`, deps.publicUrl).toString();

  /** The 404 page for an unknown agent or endpoint, the 403 page for one the role may not manage. */
  const refused = async (request: FastifyRequest, reply: FastifyReply, error: unknown) => {
    if (isAppError(error) && error.code === 'not_found') {
      return sendPage(reply, 404, notFoundPage(await frameFor(request), 'agent or endpoint'));
    }
    if (isAppError(error) && error.code === 'forbidden') {
      return sendPage(reply, 403, forbiddenPage(await frameFor(request), error.message));
    }
    return undefined;
  };

  /** Runs `page`; an unknown agent or endpoint, or one the role may not manage, gets its 404 or 403 page. */
  const guarded = async (request: FastifyRequest, reply: FastifyReply, page: () => Promise<FastifyReply>) => {
    try {
      return await page();
    } catch (error) {
      return (await refused(request, reply, error)) ?? Promise.reject(error);
    }
  };

  const show = async (
    request: FastifyRequest,
    reply: FastifyReply,
    id: string,
    status: number,
    error?: string,
  ) => {
    const principal = signedIn(request);
    const [agent, endpoints] = await request.withTenant(async (tx) => [
      await deps.agents.get(tx, id),
      await deps.inbound.list(tx, principal, id),
    ]);
    const flashed = created.take(request, reply, flashOwner(principal));
    return sendPage(
      reply,
      status,
      inboundWebhooksPage(await frameFor(request), {
        agentId: id,
        agentName: agent.name,
        endpoints: endpoints.map((endpoint) => ({ ...endpoint, url: urlOf(endpoint.id) })),
        created: flashed?.agentId === id ? flashed : undefined,
        error,
      }),
    );
  };

  const withId = { config: user, attachValidation: true, schema: { ...hide, params: IdParams } };
  const EndpointParams = Type.Object({ id: Id, endpoint_id: Id });
  const withEndpoint = { config: user, attachValidation: true, schema: { ...hide, params: EndpointParams } };
  const notFound = async (request: FastifyRequest, reply: FastifyReply) =>
    sendPage(reply, 404, notFoundPage(await frameFor(request), 'agent or endpoint'));

  app.get('/dashboard/agents/:id/inbound-webhooks', withId, async (request, reply) => {
    if (request.validationError !== undefined) return notFound(request, reply);
    return guarded(request, reply, () => show(request, reply, request.params.id, 200));
  });

  app.post(
    '/dashboard/agents/:id/inbound-webhooks',
    {
      config: user,
      attachValidation: true,
      schema: {
        ...hide,
        params: IdParams,
        body: Type.Object(
          { description: Type.Optional(Type.String({ maxLength: 200 })) },
          { additionalProperties: false },
        ),
      },
    },
    async (request, reply) => {
      if (request.validationError?.validationContext === 'params') return notFound(request, reply);
      const { id } = request.params;
      const description = bodyText(request.body ?? {}, 'description', 200) ?? '';
      const principal = signedIn(request);
      try {
        if (request.validationError !== undefined) {
          return await show(
            request,
            reply,
            id,
            400,
            'The description is one line of at most 200 characters.',
          );
        }
        const endpoint = await request.withTenant((tx) =>
          deps.inbound.create(tx, principal, id, description),
        );
        created.put(reply, flashOwner(principal), {
          url: urlOf(endpoint.id),
          secret: endpoint.secret,
          agentId: id,
        });
        return reply.redirect(`/dashboard/agents/${id}/inbound-webhooks`, 303);
      } catch (error) {
        const page = await refused(request, reply, error);
        if (page !== undefined) return page;
        const shown = shownError(reply, error);
        return show(request, reply, id, shown.status, shown.message);
      }
    },
  );

  // Deleting is confirmed first, on a page of its own (works without JavaScript).
  const askFirst = async (request: FastifyRequest, reply: FastifyReply, id: string, endpointId: string) => {
    const endpoints = await request.withTenant((tx) => deps.inbound.list(tx, signedIn(request), id));
    if (!endpoints.some((endpoint) => endpoint.id === endpointId)) return notFound(request, reply);
    return sendPage(
      reply,
      200,
      confirmPage(await frameFor(request), {
        title: 'Delete inbound endpoint',
        consequence: `Requests to ${urlOf(endpointId)} will be refused from now on. This cannot be undone.`,
        action: `/dashboard/agents/${id}/inbound-webhooks/${endpointId}/delete`,
        button: 'Delete endpoint',
        back: `/dashboard/agents/${id}/inbound-webhooks`,
      }),
    );
  };
  const remove = async (request: FastifyRequest, reply: FastifyReply, id: string, endpointId: string) => {
    await request.withTenant((tx) => deps.inbound.remove(tx, signedIn(request), id, endpointId));
    return reply.redirect(`/dashboard/agents/${id}/inbound-webhooks`, 303);
  };
  for (const [method, act] of [
    ['get', askFirst],
    ['post', remove],
  ] as const) {
    app[method](
      '/dashboard/agents/:id/inbound-webhooks/:endpoint_id/delete',
      withEndpoint,
      async (request, reply) => {
        if (request.validationError !== undefined) return notFound(request, reply);
        const { id, endpoint_id } = request.params;
        return guarded(request, reply, () => act(request, reply, id, endpoint_id));
      },
    );
  }
}
