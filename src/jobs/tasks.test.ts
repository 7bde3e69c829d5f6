import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { useTestApp } from '../../test/helpers/app.ts';
import {
  getPage,
  latestMail,
  type MailWorker,
  postForm,
  signUp,
  startMailWorker,
} from '../../test/helpers/pages.ts';
import { createOutboxMailer, type Mail } from '../email/mailer.ts';
import { enqueueJob } from './queue.ts';

// OPS-2: mail is a job. A failed send fails the job, which graphile-worker
// retries with backoff; the retry mints a fresh link, so the first one (which
// may have left) stops working. The hourly maintenance job prunes what
// expires: rate-limit counters, development mail, old recovery requests.

const ctx = useTestApp();
let worker: MailWorker;
/** Every message the worker tried to send, in order; the first attempt fails. */
const attempted: Mail[] = [];

ctx.before(async () => {
  const outbox = createOutboxMailer(ctx.db.app);
  worker = await startMailWorker(ctx.db, ctx.testApp.config.publicUrl, {
    async send(mail) {
      attempted.push(mail);
      if (attempted.length === 1) throw new Error('SMTP server unavailable');
      await outbox.send(mail);
    },
  });
});
ctx.after(() => worker.stop());

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');
const tokenIn = (mail: Mail | undefined) =>
  /\/recover\/(enc_rec_[0-9A-Za-z]{43})/.exec(mail?.text ?? '')?.[1];

test('OPS-2: a failed send is retried with backoff, and the retry mints a fresh link that replaces the first', async () => {
  await signUp(ctx.testApp.app, ctx.db, { username: 'retry', email: 'retry@example.com' });
  const failed = worker.next('send_recovery_email');
  const response = await postForm(ctx.testApp.app, '/recover', {
    login: 'retry',
    email: 'retry@example.com',
  });
  assert.equal(response.statusCode, 200, 'the page does not wait for the mail');
  assert.match(String(await failed), /SMTP server unavailable/);

  const [job] = await ctx.db.superuser<
    { id: string; attempts: number; max_attempts: number; backoff: boolean; payload: unknown }[]
  >`
    select j.id::text, j.attempts, j.max_attempts, j.run_at > now() as backoff, j.payload
    from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
    where t.identifier = 'send_recovery_email'`;
  assert.ok(job !== undefined, 'the job is kept for another attempt');
  assert.equal(job.attempts, 1);
  assert.equal(job.max_attempts, 10);
  assert.equal(job.backoff, true, 'the next attempt waits');
  assert.deepEqual(
    Object.keys(job.payload as object).sort(),
    ['tenantId', 'tokenId'],
    'the payload holds ids only',
  );

  const first = tokenIn(attempted[0]);
  assert.ok(first !== undefined);
  const [stored] = await ctx.db.superuser<{ token_hash: string }[]>`
    select token_hash from email_tokens where purpose = 'recover'`;
  assert.equal(stored?.token_hash, sha256(first));

  // Skip the wait rather than sleep through it: the worker's poll finds the job due.
  const retried = worker.next('send_recovery_email');
  await ctx.db
    .superuser`update graphile_worker._private_jobs set run_at = now() where id = ${job.id}::bigint`;
  assert.equal(await retried, null, 'the retry succeeded');
  const delivered = await latestMail(ctx.db, 'retry@example.com');
  assert.notEqual(delivered.token, first, 'the retry minted a fresh token');
  assert.equal(
    (await getPage(ctx.testApp.app, `/recover/${first}`)).statusCode,
    400,
    'the first link is dead',
  );
  assert.equal((await getPage(ctx.testApp.app, `/recover/${delivered.token}`)).statusCode, 200);
  // Only this task's: the worker queues its own start-up jobs too (the posture verifiers, OPS-5).
  const [left] = await ctx.db.superuser<{ count: number }[]>`
    select count(*)::int as count
    from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
    where t.identifier = 'send_recovery_email'`;
  assert.equal(left?.count, 0, 'the finished job is gone');
});

test('OPS-2: a mail job for a link already used sends nothing', async () => {
  const [row] = await ctx.db.superuser<{ tenant_id: string; id: string }[]>`
    select tenant_id, id from email_tokens where purpose = 'recover' limit 1`;
  assert.ok(row !== undefined);
  await ctx.db.superuser`update email_tokens set used_at = now() where id = ${row.id}::uuid`;
  const sentBefore = attempted.length;
  const done = worker.next('send_recovery_email');
  await ctx.db.app.begin((tx) =>
    enqueueJob(tx, 'send_recovery_email', { tenantId: row.tenant_id, tokenId: row.id }),
  );
  assert.equal(await done, null);
  assert.equal(attempted.length, sentBefore);
});

test('OPS-2: the maintenance job deletes expired rate-limit counters, week-old dev mail and recovery requests older than 90 days', async () => {
  await ctx.db.superuser`
    insert into rate_limits (key, points, expire) values
      ('test:expired', 3, (extract(epoch from now()) * 1000)::bigint - 1000),
      ('test:live', 3, (extract(epoch from now()) * 1000)::bigint + 600000),
      ('test:forever', 3, null)`;
  await ctx.db.superuser`
    insert into dev_outbox (to_address, subject, body, created_at) values
      ('old@example.com', 'old', 'old', now() - interval '8 days'),
      ('new@example.com', 'new', 'new', now() - interval '6 days')`;
  await ctx.db.superuser`
    insert into recovery_requests (reference, requested_at, matched) values
      ('REC-OLD0-0001', now() - interval '91 days', false),
      ('REC-NEW0-0001', now() - interval '89 days', false)`;
  const done = worker.next('maintenance_prune');
  await ctx.db.app.begin((tx) => enqueueJob(tx, 'maintenance_prune', {}));
  assert.equal(await done, null);

  const keys = await ctx.db.superuser<{ key: string }[]>`
    select key from rate_limits where key like 'test:%' order by key`;
  assert.deepEqual(
    keys.map((row) => row.key),
    ['test:forever', 'test:live'],
  );
  const mails = await ctx.db.superuser<{ subject: string }[]>`
    select subject from dev_outbox where to_address in ('old@example.com', 'new@example.com')`;
  assert.deepEqual(
    mails.map((row) => row.subject),
    ['new'],
  );
  const references = await ctx.db.superuser<{ reference: string }[]>`
    select reference from recovery_requests where reference like 'REC-%0-0001'`;
  assert.deepEqual(
    references.map((row) => row.reference),
    ['REC-NEW0-0001'],
  );
});
