import { type KeyObject, randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';
import fastifyCookie from '@fastify/cookie';
import proxyAddr from '@fastify/proxy-addr';
import fastifyStatic from '@fastify/static';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  LogController,
  type RawServerDefault,
} from 'fastify';
import type { Sql } from 'postgres';
import { registerAccountsApi } from '../accounts/api-routes.ts';
import { registerDashboardPages } from '../accounts/dashboard-routes.ts';
import { createDeviceCookies } from '../accounts/device-cookies.ts';
import { createLinksService } from '../accounts/links.ts';
import { registerMembersApi, registerMembersPages } from '../accounts/member-routes.ts';
import { createMembersService } from '../accounts/members.ts';
import { registerPageFrame } from '../accounts/page-frame.ts';
import { registerAccountPages } from '../accounts/page-routes.ts';
import { createPasswordPool, type PasswordPool } from '../accounts/password-pool.ts';
import type { ScryptParams } from '../accounts/passwords.ts';
import { registerPrincipal } from '../accounts/principal.ts';
import { createAccountsService } from '../accounts/service.ts';
import { registerAgentPages } from '../agents/dashboard-routes.ts';
import { registerEgressRoutes } from '../agents/egress/routes.ts';
import { createIngress, createIngressServer } from '../agents/ingress/proxy.ts';
import { registerAgentsApi } from '../agents/routes.ts';
import { createInstancesService } from '../agents/runtime/instances.ts';
import { tailLines } from '../agents/runtime/output-log.ts';
import { registerInstanceRoutes } from '../agents/runtime/routes.ts';
import { createAgentsService } from '../agents/service.ts';
import { registerTemplateRoutes } from '../agents/template-routes.ts';
import type { TemplateCatalog } from '../agents/templates.ts';
import { registerCheckpointRoutes } from '../audit/checkpoint-routes.ts';
import { registerAuditPages } from '../audit/page-routes.ts';
import { registerAuditApi } from '../audit/routes.ts';
import type { AuditSetup } from '../audit/setup.ts';
import { registerTileRoutes } from '../audit/tile-routes.ts';
import { registerDeliveryRoutes } from '../callbacks/delivery-routes.ts';
import { createCallbackRules } from '../callbacks/destination.ts';
import { registerCallbackEndpointPages } from '../callbacks/endpoint-page-routes.ts';
import { registerCallbackEndpointRoutes } from '../callbacks/endpoint-routes.ts';
import { createCallbackEndpoints } from '../callbacks/endpoints.ts';
import type { Config } from '../config.ts';
import type { Migration } from '../db/migrator.ts';
import { registerTotpPages, totpProfileSection } from '../factors/totp-routes.ts';
import { createTotpService } from '../factors/totp-service.ts';
import { registerTotpSteps } from '../factors/totp-step-routes.ts';
import { registerGatewayRoutes } from '../gateway/routes.ts';
import { identitiesSection } from '../identities/profile-section.ts';
import { createProviderClient } from '../identities/provider-client.ts';
import type { IdentityProviders } from '../identities/providers.ts';
import { registerIdentityRoutes } from '../identities/routes.ts';
import { createIdentitiesService } from '../identities/service.ts';
import type { Logger } from '../logger.ts';
import { createPasskeyRegistration } from '../passkeys/registration.ts';
import { relyingPartyOf } from '../passkeys/relying-party.ts';
import { passkeysProfileSection, registerPasskeyRoutes } from '../passkeys/routes.ts';
import { createPasskeySignIn } from '../passkeys/sign-in.ts';
import { registerPasskeySignInRoutes } from '../passkeys/sign-in-routes.ts';
import { repositoryControls } from '../posture/controls-catalog.ts';
import { createDetachedSigner } from '../posture/detached-jws.ts';
import { registerSecurityRoutes } from '../posture/routes.ts';
import { createSecurityDocuments, readSbomDigest } from '../posture/security-document.ts';
import { registerA2aRoutes } from '../relay/a2a-routes.ts';
import { registerCardRoutes } from '../relay/card-routes.ts';
import { createCardSigner } from '../relay/card-signing.ts';
import { registerConnectionPages } from '../relay/connection-page-routes.ts';
import { registerConnectionsApi } from '../relay/connection-routes.ts';
import { registerRelayDataPlane } from '../relay/data-plane-routes.ts';
import { registerDirectoryPages } from '../relay/directory-page-routes.ts';
import { registerListingRoutes } from '../relay/listing-routes.ts';
import { registerThreadsApi } from '../relay/thread-api-routes.ts';
import { registerThreadPages } from '../relay/thread-page-routes.ts';
import { registerSignInRoutes, secondFactorsProfileSection } from '../signin/routes.ts';
import { registerVerifyPages } from '../signin/verify-routes.ts';
import { registerStatusRoutes } from '../status/routes.ts';
import { createStatusService } from '../status/status-service.ts';
import type { Vault } from '../vault/service.ts';
import { registerDevMail } from '../web/dev-mail-page.ts';
import { registerDocsRoutes } from '../web/docs-page.ts';
import { createInboundWebhooks } from '../webhooks/inbound.ts';
import { registerInboundWebhookPages } from '../webhooks/inbound-page-routes.ts';
import { registerInboundWebhookRoutes } from '../webhooks/inbound-routes.ts';
import { registerBodyParsers } from './body-parsers.ts';
import { registerCsrfCheck } from './csrf.ts';
import { registerCustomerSerializer } from './customer-serializer.ts';
import { registerHealthRoutes } from './health-routes.ts';
import { registerOpenApi } from './openapi.ts';
import { createPageCursors } from './page-cursor.ts';
import { answerFrameworkError, registerProblemHandlers } from './problems.ts';
import type { RateLimits } from './rate-limits.ts';
import { registerSecurityHeaders, securityHeaders } from './security-headers.ts';
import { checkQueryAndParams } from './text-input.ts';
import { strictBodySchemaController } from './validation.ts';

declare module 'fastify' {
  interface FastifyInstance {
    /** Password hashing's worker pool: its counters show how busy sign-ins keep it. */
    passwords: PasswordPool;
  }
}

export type App = FastifyInstance<
  RawServerDefault,
  IncomingMessage,
  ServerResponse,
  FastifyBaseLogger,
  TypeBoxTypeProvider
>;

export interface AppDeps {
  readonly config: Config;
  readonly sql: Sql;
  readonly logger: Logger;
  readonly migrations: readonly Migration[];
  /** Operator secret that signs session and device cookies (HMAC-SHA256). */
  readonly sessionKey: string;
  readonly rateLimits: RateLimits;
  /** Checkpoint key, publisher and archive location (AUD-4, AUD-5). */
  readonly audit: AuditSetup;
  /** Operator key (Ed25519) that signs the agent cards (RLY-13). */
  readonly relaySigningKey: KeyObject;
  /** Agent templates, loaded and validated at start-up. */
  readonly templates: TemplateCatalog;
  /** Customer credentials, sealed under the tenant data keys (VLT-1). */
  readonly vault: Vault;
  /** Whether an SMTP URL is set (the URL itself, an operator secret, goes only to the mailer). */
  readonly smtpConfigured: boolean;
  /** Sign-in providers (GitHub, OIDC), with their client secrets (ACC-9). */
  readonly identityProviders: IdentityProviders;
  /**
   * Cheaper scrypt parameters for new password hashes, for the test suite
   * only: no setting reaches it, and production refuses it (ACC-2).
   */
  readonly passwordParams?: ScryptParams;
}

export const BODY_LIMIT_BYTES = 256 * 1024;
const STATIC_DIR = path.join(import.meta.dirname, '..', 'web', 'static');

function trustProxyOption(
  setting: Config['trustProxy'],
): boolean | string[] | ((address: string, hop: number) => boolean) {
  if (setting === false) return false;
  if (typeof setting === 'number') return (_address, hop) => hop < setting;
  return [...setting];
}

/**
 * Assembles the HTTP server in a fixed order: external plugins (headers,
 * OpenAPI, static files), then the app's own hooks and error handling, then
 * routes. Returns the instance unstarted, so tests can `inject` into it.
 */
export async function buildApp(deps: AppDeps): Promise<App> {
  if (deps.passwordParams !== undefined && deps.config.env === 'production') {
    throw new Error('passwordParams is for the test suite: production hashes with CURRENT_PARAMS (ACC-2)');
  }
  // AGT-3: requests whose Host is under the agents domain go to agent instances, never to these routes.
  const trust = trustProxyOption(deps.config.trustProxy);
  const trusted =
    typeof trust === 'boolean' ? () => trust : typeof trust === 'function' ? trust : proxyAddr.compile(trust);
  const ingress = createIngress({
    sql: deps.sql,
    agentsDomain: deps.config.agentsDomain,
    instancesDir: deps.config.instancesDir,
    logger: deps.logger,
    // The instance hears of its client as the platform does: X-Forwarded-For only from proxies the operator trusts.
    origin: {
      address: (req) => proxyAddr(req, trusted),
      proto: deps.config.publicUrl.startsWith('https:') ? 'https' : 'http',
    },
  });
  const setSecurityHeaders = await securityHeaders(deps.config);
  const app = Fastify({
    serverFactory: (handler, options) => createIngressServer(ingress, handler, options),
    loggerInstance: deps.logger as FastifyBaseLogger,
    // Fastify's own request lines log the URL; ours (onResponse) log the route pattern.
    logController: new LogController({ disableRequestLogging: true }),
    // The request id is ours: a client-sent X-Request-Id is not trusted.
    genReqId: () => randomUUID(),
    requestIdHeader: false,
    bodyLimit: BODY_LIMIT_BYTES,
    return503OnClosing: true,
    // X-Forwarded-For is honoured only from the proxies the operator names (ENCLAVE_TRUST_PROXY).
    trustProxy: trust,
    schemaController: strictBodySchemaController(),
    // The router's own errors run no hooks: the security headers are set here.
    frameworkErrors: (error, request, reply) => {
      setSecurityHeaders(reply);
      answerFrameworkError(error, request, reply);
    },
  }).withTypeProvider<TypeBoxTypeProvider>();
  // preClose, before the server closes: open tunnels would otherwise keep it from closing.
  app.addHook('preClose', async () => ingress.close());
  // JSON and forms only, decoded strictly. text/plain (which a cross-site form
  // may send without a CORS preflight) is not accepted: 415.
  registerBodyParsers(app);
  // First of the onRequest hooks: a response refused by any later one carries the headers too.
  registerSecurityHeaders(app, setSecurityHeaders);
  // Query strings and path parameters are one line of text on every route, schema or not (bodies: validation.ts).
  app.addHook('onRequest', (request, _reply, done) => {
    checkQueryAndParams(request);
    done();
  });

  await registerOpenApi(app, deps.config);
  await app.register(fastifyStatic, { root: STATIC_DIR, prefix: '/static/', index: false, schemaHide: true });
  await app.register(fastifyCookie, { secret: deps.sessionKey, algorithm: 'sha256' });

  registerProblemHandlers(app);
  // TEN-8: every customer-facing JSON response, problems included, passes one check.
  registerCustomerSerializer(app, deps.config);
  registerCsrfCheck(app, deps.config.publicUrl);
  const cookies = { secure: deps.config.env === 'production' };
  registerPrincipal(app, deps.sql, cookies);
  registerPageFrame(app, deps.sql);
  // The hooks every request passes are synchronous (done-style): an async hook costs a promise and a microtask hop.
  app.addHook('onSend', (request, reply, _payload, done) => {
    reply.header('x-request-id', request.id);
    done();
  });
  // The access line's fields are the method, the route pattern, a status and a
  // time: none can hold a secret, so it skips the redaction pass (several µs a line).
  const accessLog = deps.logger.child({}, { redact: [] });
  app.addHook('onResponse', (request, reply, done) => {
    // The route pattern, not the URL: paths and queries can carry tokens.
    accessLog.info(
      {
        reqId: request.id,
        method: request.method,
        route: request.routeOptions.url ?? '(unmatched)',
        status: reply.statusCode,
        ms: Math.round(reply.elapsedTime),
      },
      'request',
    );
    done();
  });

  const passwords = createPasswordPool({
    workers: deps.config.passwordWorkers,
    queue: deps.config.passwordQueue,
    ...(deps.passwordParams === undefined ? {} : { params: deps.passwordParams }),
  });
  app.decorate('passwords', passwords);
  app.addHook('onClose', async () => passwords.close());
  const accounts = createAccountsService({
    sql: deps.sql,
    rateLimits: deps.rateLimits,
    deviceCookies: createDeviceCookies(deps.sessionKey),
    passwords,
  });
  registerHealthRoutes(app, deps);
  registerStatusRoutes(app, { status: createStatusService({ sql: deps.sql, logger: deps.logger }) });
  registerDocsRoutes(app);
  // One key binds every list cursor to its tenant and list (src/http/page-cursor.ts).
  const cursors = createPageCursors(deps.sessionKey);
  registerAccountsApi(app, { accounts, publicUrl: deps.config.publicUrl, cursors });
  const links = createLinksService({ sql: deps.sql, rateLimits: deps.rateLimits, passwords });
  const identities = createIdentitiesService({
    sql: deps.sql,
    accounts,
    providers: deps.identityProviders,
    client: createProviderClient(),
    publicUrl: deps.config.publicUrl,
  });
  const providers = identities.providerList();
  registerAccountPages(app, { accounts, links, cookies, providers });
  const totp = createTotpService({ sql: deps.sql, vault: deps.vault, rateLimits: deps.rateLimits });
  registerDashboardPages(app, {
    accounts,
    links,
    cookies,
    publicUrl: deps.config.publicUrl,
    rateLimits: deps.rateLimits,
    sessionKey: deps.sessionKey,
    cursors,
    profileSections: [
      secondFactorsProfileSection(deps.sql),
      totpProfileSection(totp),
      passkeysProfileSection(deps.sql),
      async (principal) => identitiesSection(providers, await identities.list(principal)),
    ],
  });
  const signIn = { sql: deps.sql, rateLimits: deps.rateLimits, cookies };
  registerVerifyPages(app, signIn);
  registerIdentityRoutes(app, { identities, signIn });
  registerSignInRoutes(app);
  registerTotpPages(app, { totp, cookies, sessionKey: deps.sessionKey });
  registerTotpSteps(app, { totp, signIn });
  const relyingParty = relyingPartyOf(deps.config);
  registerPasskeyRoutes(app, {
    registration: createPasskeyRegistration({ sql: deps.sql, rp: relyingParty }),
    rateLimits: deps.rateLimits,
  });
  registerPasskeySignInRoutes(app, {
    ...signIn,
    passkeys: createPasskeySignIn({ sql: deps.sql, rp: relyingParty, rateLimits: deps.rateLimits }),
  });
  const members = createMembersService();
  registerMembersApi(app, { members, cursors });
  registerMembersPages(app, { members, cookies, cursors });
  registerAuditApi(app, { sql: deps.sql });
  registerTemplateRoutes(app, { templates: deps.templates });
  const agents = createAgentsService({ vault: deps.vault, templates: deps.templates });
  registerAgentsApi(app, { agents, templates: deps.templates, cursors });
  registerEgressRoutes(app, { cursors });
  registerGatewayRoutes(app, { agents });
  const instances = createInstancesService({ templates: deps.templates });
  // Agent ids reach this only after schema validation as uuids: no path tricks.
  const logs = (agentId: string, lines: number) =>
    tailLines(path.join(deps.config.instancesDir, agentId, 'output.log'), lines);
  const addresses = { publicUrl: deps.config.publicUrl, agentsDomain: deps.config.agentsDomain };
  registerInstanceRoutes(app, { instances, logs, ...addresses });
  registerAgentPages(app, { agents, templates: deps.templates, instances, logs, ...addresses, cursors });
  registerConnectionsApi(app, { cursors, rateLimits: deps.rateLimits });
  registerConnectionPages(app, { cursors, rateLimits: deps.rateLimits });
  registerThreadPages(app, { cursors });
  registerThreadsApi(app, { cursors, rateLimits: deps.rateLimits });
  registerRelayDataPlane(app, { sql: deps.sql, rateLimits: deps.rateLimits });
  registerAuditPages(app);
  registerCheckpointRoutes(app, { sql: deps.sql, sources: deps.audit, rateLimits: deps.rateLimits });
  registerTileRoutes(app, { sql: deps.sql });
  const cardSigner = createCardSigner(deps.relaySigningKey, deps.config.publicUrl);
  registerCardRoutes(app, {
    sql: deps.sql,
    publicUrl: deps.config.publicUrl,
    templates: deps.templates,
    signer: cardSigner,
    agents,
  });
  // OPS-5: the catalog is read from docs/controls.md now, at start; /security.json is signed with the card key.
  registerSecurityRoutes(app, {
    documents: createSecurityDocuments({
      sql: deps.sql,
      origin: deps.config.publicUrl,
      contact: deps.config.securityContact,
      controls: await repositoryControls(),
      sbom: await readSbomDigest(),
      signer: createDetachedSigner(deps.relaySigningKey, cardSigner.kid),
      postureIntervalMinutes: deps.config.postureIntervalMinutes,
    }),
    publicUrl: deps.config.publicUrl,
    contact: deps.config.securityContact,
  });
  const directory = { sql: deps.sql, cursors, templates: deps.templates, publicUrl: deps.config.publicUrl };
  registerListingRoutes(app, { ...directory, agents });
  registerDirectoryPages(app, directory);
  registerA2aRoutes(app, { sql: deps.sql, rateLimits: deps.rateLimits });
  const inbound = createInboundWebhooks({ sql: deps.sql, sessionKey: deps.sessionKey, agents });
  registerInboundWebhookRoutes(app, { inbound, publicUrl: deps.config.publicUrl });
  registerDeliveryRoutes(app, { cursors });
  registerInboundWebhookPages(app, {
    inbound,
    agents,
    publicUrl: deps.config.publicUrl,
    sessionKey: deps.sessionKey,
    cookies,
  });
  const callbackEndpoints = createCallbackEndpoints({
    sessionKey: deps.sessionKey,
    rules: createCallbackRules(deps.config),
  });
  registerCallbackEndpointRoutes(app, { endpoints: callbackEndpoints, cursors });
  registerCallbackEndpointPages(app, {
    endpoints: callbackEndpoints,
    cursors,
    sessionKey: deps.sessionKey,
    cookies,
  });
  // The outbox page exists only where mail goes to the outbox: development without SMTP.
  if (deps.config.env === 'development' && !deps.smtpConfigured) registerDevMail(app, deps.sql);
  return app;
}
