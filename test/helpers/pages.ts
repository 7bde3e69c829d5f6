import { EventEmitter } from 'node:events';
import { Writable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import type { LightMyRequestResponse as Response } from 'fastify';
import type { WorkerEvents } from 'graphile-worker';
import type { InviteKind } from '../../src/accounts/invites.ts';
import { createOutboxMailer, type Mailer } from '../../src/email/mailer.ts';
import type { App } from '../../src/http/app.ts';
import { startWorker, type Worker } from '../../src/jobs/worker.ts';
import { createLogger } from '../../src/logger.ts';
import { mintInvite as mintAccountInvite } from './accounts.ts';
import type { TestAppContext } from './app.ts';
import { testAuditSetup } from './audit.ts';
import type { TestDatabase } from './database.ts';

// Driving the HTML pages through app.inject as a browser would: form posts
// from our own origin, the session cookie carried along, and a real job
// worker that delivers mail into the dev outbox.

/** The default public URL's origin (ENCLAVE_PUBLIC_URL unset in tests). */
export const ORIGIN = 'http://127.0.0.1:3000';
export const PASSWORD = 'correct horse battery staple';

export interface FormOptions {
  readonly cookie?: string | undefined;
  /** The client address; by default each request gets a fresh one, so per-address rate limits stay out of the way. */
  readonly remoteAddress?: string;
}

let addresses = 0;
function freshAddress(): string {
  addresses += 1;
  return `10.${(addresses >> 16) & 255}.${(addresses >> 8) & 255}.${addresses & 255}`;
}

export function postForm(
  app: App,
  url: string,
  fields: Record<string, string>,
  options: FormOptions = {},
): Promise<Response> {
  return app.inject({
    method: 'POST',
    url,
    remoteAddress: options.remoteAddress ?? freshAddress(),
    headers: {
      origin: ORIGIN,
      'content-type': 'application/x-www-form-urlencoded',
      ...(options.cookie === undefined ? {} : { cookie: options.cookie }),
    },
    payload: new URLSearchParams(fields).toString(),
  });
}

export function getPage(app: App, url: string, options: FormOptions = {}): Promise<Response> {
  return app.inject({
    method: 'GET',
    url,
    remoteAddress: options.remoteAddress ?? freshAddress(),
    ...(options.cookie === undefined ? {} : { headers: { cookie: options.cookie } }),
  });
}

/** Every Set-Cookie header of a response, one string each. */
export function setCookies(response: { headers: Record<string, unknown> }): string[] {
  const header = response.headers['set-cookie'];
  if (header === undefined) return [];
  return Array.isArray(header) ? header.map(String) : [String(header)];
}

/** `cookie` and the one-time secret cookies the response set (secret-flash.ts), as a browser sends them next. */
export function withFlash(cookie: string, response: { headers: Record<string, unknown> }): string {
  const flashes = setCookies(response)
    .map((line) => line.split(';')[0] ?? '')
    .filter((pair) => pair.startsWith('enclave_flash_') && !pair.endsWith('='));
  return [cookie, ...flashes].join('; ');
}

/** `enclave_session=…` as set by the response, ready for a Cookie header; undefined if not set (or cleared). */
export function sessionCookie(response: Response): string | undefined {
  const pair = setCookies(response)
    .map((line) => line.split(';')[0] ?? '')
    .find((p) => p.startsWith('enclave_session='));
  return pair === undefined || pair === 'enclave_session=' ? undefined : pair;
}

export async function mintInvite(
  db: TestDatabase,
  invite: { email: string | null; kind?: InviteKind; tenantId?: string | null; expiresAt?: Date },
): Promise<string> {
  const { token } = await mintAccountInvite(db, {
    kind: invite.kind ?? 'tenant',
    email: invite.email?.toLowerCase() ?? null,
    tenantId: invite.tenantId ?? null,
    expiresAt: invite.expiresAt ?? new Date(Date.now() + 86400_000),
  });
  return token;
}

export interface SignedUp {
  readonly username: string;
  readonly email: string;
  readonly cookie: string;
}

/** Signs up through the page with a fresh invite; returns the session cookie. */
export async function signUp(
  app: App,
  db: TestDatabase,
  account: { username: string; email: string; kind?: InviteKind; tenantId?: string; password?: string },
): Promise<SignedUp> {
  const invite = await mintInvite(db, {
    email: account.email,
    kind: account.kind ?? 'tenant',
    tenantId: account.tenantId ?? null,
  });
  const response = await postForm(app, '/signup', {
    invite,
    email: account.email,
    username: account.username,
    password: account.password ?? PASSWORD,
  });
  const cookie = sessionCookie(response);
  if (response.statusCode !== 303 || cookie === undefined) {
    throw new Error(
      `signup of ${account.username} failed: ${response.statusCode} ${response.body.slice(0, 500)}`,
    );
  }
  return { username: account.username, email: account.email, cookie };
}

/** The visible text of a page, tags dropped and whitespace collapsed. */
export function textOf(document: string): string {
  return document
    .replace(/<[^>]*>/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
}

export interface MailWorker {
  /** Resolves with the job's error (null on success) once the next job of this task has finished and its outcome is recorded. Call before the request. */
  next(task: string): Promise<unknown>;
  /** What the worker logged, one JSON line each. */
  logLines(): string[];
  /** Settles when the runner stops; rejects if it dies on its own (as main.ts treats as fatal). */
  readonly done: Promise<void>;
  stop(): Promise<void>;
}

interface JobComplete {
  job: { id: string; task_identifier: string };
  error: unknown;
}

/**
 * Waits until the worker has written a job's outcome: graphile-worker emits
 * job:complete while it is still recording it (deleting the row on success,
 * unlocking it with a new run_at on failure), so without this a test could
 * read the job as it was mid-run.
 */
async function outcomeRecorded(db: TestDatabase, jobId: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const [row] = await db.superuser<{ locked: boolean }[]>`
      select locked_at is not null as locked from graphile_worker._private_jobs where id = ${jobId}::bigint`;
    if (row === undefined || !row.locked) return;
    if (Date.now() > deadline) throw new Error(`job ${jobId}: its outcome was not recorded within 10 s`);
    await delay(10);
  }
}

/** A mail worker (startMailWorker) for one suite of useTestApp: started before its tests, stopped after; read it inside a test. */
export function useMailWorker(ctx: TestAppContext): () => MailWorker {
  let worker: MailWorker | undefined;
  ctx.before(async () => {
    worker = await startMailWorker(ctx.db, ctx.testApp.config.publicUrl);
  });
  ctx.after(() => worker?.stop());
  return () => {
    if (worker === undefined) throw new Error('useMailWorker: read before the suite started it');
    return worker;
  };
}

/** A real graphile-worker over the test database, delivering mail with `mailer` (the dev outbox by default). */
export async function startMailWorker(
  db: TestDatabase,
  publicUrl: string,
  mailer: Pick<Mailer, 'send'> = createOutboxMailer(db.app),
): Promise<MailWorker> {
  const events: WorkerEvents = new EventEmitter();
  const waiting: { task: string; resolve: (error: unknown) => void }[] = [];
  events.on('job:complete', ({ job, error }: JobComplete) => {
    const index = waiting.findIndex((waiter) => waiter.task === job.task_identifier);
    if (index === -1) return;
    const [waiter] = waiting.splice(index, 1);
    outcomeRecorded(db, job.id).then(
      () => waiter?.resolve(error),
      (failure: unknown) => waiter?.resolve(failure),
    );
  });
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  const worker: Worker = await startWorker({
    target: db.target,
    credentials: db.appCredentials,
    sql: db.app,
    logger: createLogger('info', sink),
    concurrency: 1,
    workerId: 'pages-test-worker',
    mailer,
    publicUrl,
    audit: testAuditSetup(),
    events,
  });
  return {
    next: (task) => new Promise((resolve) => waiting.push({ task, resolve })),
    logLines: () => [...lines],
    done: worker.done,
    stop: () => worker.stop(),
  };
}

/** The newest outbox message to an address, and the one-time link in it. */
export async function latestMail(
  db: TestDatabase,
  to: string,
): Promise<{ subject: string; body: string; link: string; token: string }> {
  const [mail] = await db.superuser<{ subject: string; body: string }[]>`
    select subject, body from dev_outbox where to_address = ${to} order by created_at desc limit 1`;
  if (mail === undefined) throw new Error(`no mail to ${to}`);
  const match = /(https?:\/\/\S+\/(?:recover|verify-email)\/(enc_[a-z]+_[0-9A-Za-z]+))/.exec(mail.body);
  if (match?.[1] === undefined || match[2] === undefined) throw new Error(`no link in the mail to ${to}`);
  return { subject: mail.subject, body: mail.body, link: match[1], token: match[2] };
}
