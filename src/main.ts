import { bootstrapOperatorInvite, inviteLink, OPERATOR_INVITE_HOURS } from './accounts/invites.ts';
import { createEgressProxy } from './agents/egress/proxy.ts';
import { createBwrapDriver } from './agents/runtime/bwrap-driver.ts';
import { createLifecycle } from './agents/runtime/lifecycle.ts';
import { loadTemplateCatalog, templateDirs } from './agents/templates.ts';
import { loadAuditSetup } from './audit/setup.ts';
import { createCallbackDelivery } from './callbacks/deliver.ts';
import { createCallbackRules } from './callbacks/destination.ts';
import { type Config, type Env, loadConfig } from './config.ts';
import { type Database, openDatabase } from './db/database.ts';
import { createMailer, type Mailer } from './email/mailer.ts';
import { createGateway, type Gateway } from './gateway/gateway.ts';
import { type App, buildApp } from './http/app.ts';
import { createRateLimits, type RateLimits } from './http/rate-limits.ts';
import { loadIdentityProviders } from './identities/providers.ts';
import { defaultWorkerId } from './jobs/tasks.ts';
import { startWorker, type Worker } from './jobs/worker.ts';
import { createLogger, type Logger } from './logger.ts';
import { loadRelaySigningKey } from './operator-secrets/relay-signing-key.ts';
import { loadOperatorSecret } from './operator-secrets/secrets.ts';
import { loadSmtpUrl } from './operator-secrets/smtp-url.ts';
import { loadSupportKey } from './operator-secrets/support-key.ts';
import { createRelayDelivery } from './relay/delivery.ts';
import { createVault, loadMasterKeyProvider } from './vault/service.ts';
import { createInboundDelivery } from './webhooks/inbound-delivery.ts';

// Start-up in one place: config → database (embedded or external) → migrate
// → HTTP server and/or job worker. Stop runs the same steps backwards, so
// in-flight requests finish before the worker and the database go away.

export interface StartOptions {
  readonly env: Env;
  readonly cwd: string;
  readonly server: boolean;
  readonly worker: boolean;
  /** Where the human-facing lines (URL, start-up time) go. */
  readonly print: (line: string) => void;
}

export interface Enclave {
  readonly config: Config;
  readonly logger: Logger;
  readonly db: Database;
  readonly url: string | undefined;
  /** Settles if the worker dies on its own; start-up code treats that as fatal. */
  readonly workerDone: Promise<void>;
  stop(): Promise<void>;
}

export async function startEnclave(options: StartOptions): Promise<Enclave> {
  const started = performance.now();
  const config = loadConfig(options.env, options.cwd);
  const logger = createLogger(config.logLevel);
  for (const line of config.deprecations) logger.warn(line);
  // Before the database: a bad template file stops start-up with one line (a TemplateError).
  const templates = await loadTemplateCatalog(templateDirs(config));
  const sessionKey = await loadOperatorSecret(config, options.env, 'session_key');
  // An operator secret, not a Config field: it may hold the SMTP password (see smtp-url.ts).
  const smtpUrl = await loadSmtpUrl(config, options.env);
  const audit = await loadAuditSetup(config, options.env);
  // Provider client secrets are operator secrets too: read from their files here, never Config fields.
  const identityProviders = await loadIdentityProviders(config, options.env);
  // Only the server signs agent cards (RLY-13); a missing key in production stops start-up here.
  const relaySigningKey = options.server ? await loadRelaySigningKey(config, options.env) : undefined;
  // Customer credentials' master key: a missing or malformed one stops start-up here (VLT-1).
  const vault = createVault({ provider: await loadMasterKeyProvider(config, options.env) });
  // The operator's support key: only the process that runs instances offers it to them.
  const supportKey = options.server && options.worker ? await loadSupportKey(config, options.env) : undefined;
  const db = await openDatabase(config, options.env, {
    appPoolSize: options.server ? 20 : 5,
    timeoutMs: config.dbTimeoutMs,
  });
  let app: App | undefined;
  let worker: Worker | undefined;
  let rateLimits: RateLimits | undefined;
  let mailer: Mailer | undefined;
  let gateway: Gateway | undefined;
  const stop = async (): Promise<void> => {
    await app?.close();
    await rateLimits?.close();
    // The worker stops the instances it runs (lifecycle.stopAll) once its runner has stopped.
    await worker?.stop();
    gateway?.close();
    mailer?.close();
    await db.close();
  };
  try {
    if (db.migrated.applied.length > 0) logger.info({ applied: db.migrated.applied }, 'migrations applied');
    // A wrong master key is found here, before any request, and changes nothing.
    await vault.checkMasterKeys(db.app);
    if (options.worker) {
      mailer = createMailer({ env: config.env, mailFrom: config.mailFrom, smtpUrl }, db.app);
      // Agent instances run in the process that serves (`enclave start`), which the ingress
      // and the egress sockets share a host with; scale-out workers take no runtime jobs.
      // The model gateway serves the instances this process runs, each on its own socket (AGT-7).
      gateway =
        options.server && supportKey !== undefined
          ? createGateway({
              sql: db.app,
              vault,
              templates,
              logger,
              upstreams: config.gatewayUpstreams,
              autoModels: config.gatewayAutoModels,
              timeoutMs: config.gatewayTimeoutMs,
            })
          : undefined;
      // The relay's and the inbound webhooks' deliveries reach instances through the same sockets.
      const instanceDeliveryDeps = {
        sql: db.app,
        templates,
        instancesDir: config.instancesDir,
        agentsDomain: config.agentsDomain,
        proto: new URL(config.publicUrl).protocol === 'https:' ? ('https' as const) : ('http' as const),
        logger,
      };
      const lifecycle =
        options.server && supportKey !== undefined
          ? createLifecycle({
              sql: db.app,
              driver: createBwrapDriver({
                instancesDir: config.instancesDir,
                egress: createEgressProxy({
                  sql: db.app,
                  logger,
                  allow: config.egressAllow,
                  publicUrl: config.publicUrl,
                }),
                gateway,
                logger,
                unenforcedLimits: config.unenforcedLimits,
              }),
              templates,
              vault,
              supportKey: supportKey.publicKey,
              logger,
            })
          : undefined;
      worker = await startWorker({
        target: db.target,
        credentials: db.appCredentials,
        timeoutMs: config.dbTimeoutMs,
        sql: db.app,
        logger,
        concurrency: config.workerConcurrency,
        workerId: defaultWorkerId(),
        mailer,
        publicUrl: config.publicUrl,
        audit,
        postureIntervalMinutes: config.postureIntervalMinutes,
        callbackDelivery: createCallbackDelivery({
          sql: db.app,
          sessionKey,
          rules: createCallbackRules(config),
        }),
        ...(lifecycle === undefined
          ? {}
          : {
              lifecycle,
              relayDelivery: createRelayDelivery(instanceDeliveryDeps),
              inboundDelivery: createInboundDelivery(instanceDeliveryDeps),
            }),
      });
    }
    let url: string | undefined;
    if (options.server && relaySigningKey !== undefined) {
      rateLimits = createRateLimits(db.target, db.appCredentials, logger, config.dbTimeoutMs);
      app = await buildApp({
        config,
        sql: db.app,
        logger,
        migrations: db.migrations,
        sessionKey,
        rateLimits,
        audit,
        relaySigningKey,
        templates,
        vault,
        smtpConfigured: smtpUrl !== undefined,
        identityProviders,
      });
      await app.listen({ host: config.host, port: config.port });
      url = config.publicUrl;
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    const database =
      db.embedded === undefined ? 'external PostgreSQL' : `embedded PostgreSQL in ${config.dataDir}`;
    // Minted before anything is printed: a caller may signal us as soon as it
    // sees the "running" line, and its handlers are installed only once we return.
    const first = url === undefined ? undefined : await bootstrapOperatorInvite(db.app, config.operatorEmail);
    if (url === undefined) {
      options.print(`Enclave worker is running (started in ${seconds} s, ${database})`);
    } else {
      options.print(`Enclave is running at ${url} (started in ${seconds} s, ${database})`);
      if (first !== undefined) {
        const bound = first.invite.email === null ? 'not bound to an address' : `for ${first.invite.email}`;
        options.print(
          `No operator yet. Sign up as the first operator (one use, ${bound}, expires in ${OPERATOR_INVITE_HOURS} hours):`,
        );
        options.print(`  ${inviteLink(config.publicUrl, first.token)}`);
      }
    }
    return {
      config,
      logger,
      db,
      url,
      workerDone: worker?.done ?? new Promise<void>(() => {}),
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
