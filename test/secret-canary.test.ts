import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import type { LightMyRequestResponse } from 'fastify';
import { withTenant } from '../src/db/tenant.ts';
import { useTestApp } from './helpers/app.ts';
import {
  latestMail,
  type MailWorker,
  mintInvite,
  ORIGIN,
  startMailWorker,
  withFlash,
} from './helpers/pages.ts';

// OPS-7, the secret canary. Attack: a secret typed into Enclave — a customer
// credential, a password, a token the platform handed out — resurfaces where
// it was never meant to be: a log line, another response, an audit event, a
// column. We plant distinctive canaries through every input path built so
// far, then search everything the run produced: each response body and its
// headers, every log line of the app and the mail worker, and every row of
// every table read as the database superuser, in plain text, hex and base64.
// Zero hits. A credential's last 4 characters may show (they are not searched
// for); a token the platform mints may appear in the one response that hands
// it out, and nowhere else.

const ctx = useTestApp();
let worker: MailWorker;
ctx.before(async () => {
  worker = await startMailWorker(ctx.db, ctx.testApp.config.publicUrl);
});
ctx.after(() => worker.stop());

/** A value no code path could produce by accident. */
function canary(kind: string): string {
  return `CANARY${kind}${randomBytes(12).toString('hex')}Zq`;
}

interface Seen {
  readonly label: string;
  readonly text: string;
  /** Secrets minted by the platform that this response is the one place to show. */
  readonly hands: readonly string[];
}

const responses: Seen[] = [];
/** Planted by us: must appear in no response, log or row. */
const planted: string[] = [];
/** Minted by the platform: may appear only in the response that hands it out. */
const minted: string[] = [];

let addresses = 0;

async function send(
  label: string,
  request: {
    method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
    url: string;
    cookie?: string;
    bearer?: string;
    form?: Record<string, string>;
    json?: object;
  },
): Promise<LightMyRequestResponse> {
  addresses += 1;
  const headers: Record<string, string> = { origin: ORIGIN };
  if (request.cookie !== undefined) headers.cookie = request.cookie;
  if (request.bearer !== undefined) headers.authorization = `Bearer ${request.bearer}`;
  if (request.form !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
  const response = await ctx.testApp.app.inject({
    method: request.method,
    url: request.url,
    remoteAddress: `10.77.${addresses >> 8}.${addresses & 255}`,
    headers,
    ...(request.form !== undefined ? { payload: new URLSearchParams(request.form).toString() } : {}),
    ...(request.json !== undefined ? { payload: request.json } : {}),
  });
  responses.push({ label, text: `${response.body}\n${JSON.stringify(response.headers)}`, hands: [] });
  return response;
}

/** Marks the last response as the one that hands out `secret`. */
function handsOut(secret: string): void {
  const last = responses.pop();
  assert.ok(last !== undefined);
  responses.push({ ...last, hands: [secret] });
  minted.push(secret);
}

function sessionFrom(response: LightMyRequestResponse): string {
  const header = response.headers['set-cookie'];
  const line = (Array.isArray(header) ? header : [String(header)]).find((l) =>
    l.startsWith('enclave_session='),
  );
  assert.ok(line !== undefined, `a session cookie (${response.statusCode})`);
  return line.split(';')[0] ?? '';
}

/** Every way a secret's bytes could sit in a text or a bytea column's text form. */
function encodings(secret: string): string[] {
  const bytes = Buffer.from(secret, 'utf8');
  return [
    secret,
    secret.toLowerCase(),
    bytes.toString('hex'),
    bytes.toString('base64').slice(0, -4),
    bytes.toString('base64url').slice(0, -4),
    encodeURIComponent(secret),
  ];
}

async function dumpEveryTable(): Promise<string[]> {
  const tables = await ctx.db.superuser<{ schema: string; name: string }[]>`
    select n.nspname as schema, c.relname as name
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where c.relkind in ('r', 'p')
      and n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
      and n.nspname not like 'pg_temp%'`;
  assert.ok(tables.some((t) => t.name === 'credentials') && tables.some((t) => t.name === 'audit_events'));
  const lines: string[] = [];
  for (const { schema, name } of tables) {
    // Names from the catalog, quoted as identifiers.
    const table = `"${schema.replaceAll('"', '""')}"."${name.replaceAll('"', '""')}"`;
    const rows = await ctx.db.superuser.unsafe<{ row: string }[]>(`select t::text as row from ${table} t`);
    for (const { row } of rows) lines.push(`${schema}.${name}: ${row}`);
  }
  return lines;
}

describe('secret canary', () => {
  test('OPS-7: canaries planted through every input path appear in no log line, response, audit row or database column', async () => {
    const email = `canary-${randomBytes(4).toString('hex')}@example.test`;
    const username = `canary_${randomBytes(4).toString('hex')}`;
    const passwords = {
      signup: canary('pwsignup'),
      wrong: canary('pwwrong'),
      changed: canary('pwchanged'),
      reset: canary('pwreset'),
      member: canary('pwmember'),
    };
    planted.push(...Object.values(passwords));

    // Passwords: signup, a failed and a good sign-in, a change, an email change, a recovery reset.
    const invite = await mintInvite(ctx.db, { email });
    minted.push(invite);
    const signup = await send('signup', {
      method: 'POST',
      url: '/signup',
      form: { invite, email, username, password: passwords.signup },
    });
    assert.equal(signup.statusCode, 303, signup.body);
    const failed = await send('login (wrong password)', {
      method: 'POST',
      url: '/login',
      form: { login: username, password: passwords.wrong },
    });
    assert.equal(failed.statusCode, 401);
    let cookie = sessionFrom(
      await send('login', {
        method: 'POST',
        url: '/login',
        form: { login: username, password: passwords.signup },
      }),
    );
    const changed = await send('password change', {
      method: 'POST',
      url: '/profile/password',
      cookie,
      form: { current_password: passwords.signup, new_password: passwords.changed },
    });
    assert.ok(changed.statusCode < 400, changed.body);
    cookie = sessionFrom(
      await send('login again', {
        method: 'POST',
        url: '/login',
        form: { login: email, password: passwords.changed },
      }),
    );
    await send('email change', {
      method: 'POST',
      url: '/profile/email',
      cookie,
      form: { email: `new-${email}`, current_password: passwords.changed },
    });
    const mailed = worker.next('send_recovery_email');
    await send('recover', { method: 'POST', url: '/recover', form: { login: username, email } });
    assert.equal(await mailed, null);
    const link = await latestMail(ctx.db, email);
    minted.push(link.token);
    const reset = await send('reset', {
      method: 'POST',
      url: `/recover/${link.token}`,
      form: { new_password: passwords.reset },
    });
    assert.ok(reset.statusCode < 400, reset.body);
    cookie = sessionFrom(
      await send('login after reset', {
        method: 'POST',
        url: '/login',
        form: { login: username, password: passwords.reset },
      }),
    );

    // Tokens the platform mints: an API token (API and dashboard), a member invite.
    const token = await send('mint API token', {
      method: 'POST',
      url: '/api/v1/tokens',
      cookie,
      json: { name: 'canary token' },
    });
    assert.equal(token.statusCode, 201, token.body);
    const apiToken = token.json<{ token: string }>().token;
    handsOut(apiToken);
    const dashboardToken = await send('mint token on the dashboard', {
      method: 'POST',
      url: '/dashboard/settings/tokens',
      cookie,
      form: { name: 'dashboard canary', scope: 'read' },
    });
    assert.equal(dashboardToken.statusCode, 303, dashboardToken.body);
    // Post-redirect-get: the page the form redirects to shows the token, once.
    const shownPage = await send('the page that shows the new token', {
      method: 'GET',
      url: '/dashboard/settings/tokens',
      cookie: withFlash(cookie, dashboardToken),
    });
    const shownToken = /enc_live_[0-9A-Za-z]{43}/.exec(shownPage.body)?.[0];
    assert.ok(shownToken !== undefined, 'the dashboard shows the new token once');
    handsOut(shownToken);
    const inviteMailed = worker.next('send_invite_email');
    const memberInvite = await send('member invite', {
      method: 'POST',
      url: '/api/v1/invites',
      bearer: apiToken,
      json: { email: `member-${email}`, kind: 'member' },
    });
    assert.equal(memberInvite.statusCode, 201, memberInvite.body);
    assert.equal(await inviteMailed, null);
    // A member invite's link is in its mail only (ACC-1).
    const [inviteMail] = await ctx.db.superuser<{ body: string }[]>`
      select body from dev_outbox where to_address = ${`member-${email}`} order by created_at desc limit 1`;
    const inviteToken = /enc_inv_[0-9A-Za-z]{43}/.exec(inviteMail?.body ?? '')?.[0];
    assert.ok(inviteToken !== undefined);
    minted.push(inviteToken);
    const joined = await send('member signup', {
      method: 'POST',
      url: '/signup',
      form: {
        invite: inviteToken,
        email: `member-${email}`,
        username: `${username}_m`,
        password: passwords.member,
      },
    });
    assert.equal(joined.statusCode, 303, joined.body);

    // Customer credentials: at onboarding, by PUT (add and rotate), and refused ones.
    const credentials = {
      onboarding: canary('credonboard'),
      added: canary('credadded'),
      rotated: canary('credrotated'),
      refusedPattern: canary('credrefused'),
      refusedSize: canary('credhuge'),
      refusedName: canary('credname'),
      dashboardOnboarding: canary('creddashonboard'),
      dashboardAdded: canary('creddashadded'),
      dashboardRefused: canary('creddashrefused'),
    };
    planted.push(...Object.values(credentials));
    const onboarded = await send('onboard', {
      method: 'POST',
      url: '/api/v1/agents',
      bearer: apiToken,
      json: {
        name: 'Canary',
        handle: 'canary-echo',
        template: 'echo',
        credentials: { echo_token: credentials.onboarding },
      },
    });
    assert.equal(onboarded.statusCode, 201, onboarded.body);
    const agentId = onboarded.json<{ id: string }>().id;
    const second = await send('onboard a second agent', {
      method: 'POST',
      url: '/api/v1/agents',
      bearer: apiToken,
      json: { name: 'Canary 2', handle: 'canary-echo-2', template: 'echo' },
    });
    const secondId = second.json<{ id: string }>().id;
    const put = (label: string, id: string, name: string, value: string) =>
      send(label, {
        method: 'PUT',
        url: `/api/v1/agents/${id}/credentials/${name}`,
        bearer: apiToken,
        json: { value },
      });
    assert.equal((await put('add credential', secondId, 'echo_token', credentials.added)).statusCode, 201);
    assert.equal(
      (await put('rotate credential', agentId, 'echo_token', credentials.rotated)).statusCode,
      200,
    );
    assert.equal((await put('undeclared name', agentId, 'other', credentials.refusedName)).statusCode, 400);
    assert.equal(
      (await put('oversized', agentId, 'echo_token', credentials.refusedSize + 'x'.repeat(65_536)))
        .statusCode,
      400,
    );
    const refused = await send('refused at onboarding', {
      method: 'POST',
      url: '/api/v1/agents',
      bearer: apiToken,
      json: {
        name: 'Chat',
        handle: 'canary-chat',
        template: 'llm-chat',
        credentials: { anthropic_api_key: credentials.refusedPattern },
      },
    });
    assert.equal(refused.statusCode, 400);

    // The same through the dashboard's forms: onboarding, add/replace, and a refused form re-shown.
    const viaPage = await send('dashboard onboarding', {
      method: 'POST',
      url: '/dashboard/agents',
      cookie,
      form: {
        name: 'Canary page',
        handle: 'canary-page',
        template: 'echo',
        support_access: 'on',
        credential_echo_token: credentials.dashboardOnboarding,
      },
    });
    assert.equal(viaPage.statusCode, 303, viaPage.body);
    const pageAgent = new URL(String(viaPage.headers.location), ORIGIN).pathname.split('/').pop() ?? '';
    const added = await send('dashboard add credential', {
      method: 'POST',
      url: `/dashboard/agents/${pageAgent}/credentials`,
      cookie,
      form: { name: 'echo_token', value: credentials.dashboardAdded },
    });
    assert.equal(added.statusCode, 303, added.body);
    const reshown = await send('dashboard refused onboarding', {
      method: 'POST',
      url: '/dashboard/agents',
      cookie,
      form: {
        name: 'Canary page',
        handle: 'canary-page',
        template: 'echo',
        credential_echo_token: credentials.dashboardRefused,
      },
    });
    assert.equal(reshown.statusCode, 409, 'the handle is taken: the form comes back');
    await send('dashboard agent page', { method: 'GET', url: `/dashboard/agents/${pageAgent}`, cookie });
    await send('dashboard agent list', { method: 'GET', url: '/dashboard/agents', cookie });

    // Reads of everything there is to read, so a leak through any of them is caught.
    for (const url of [
      '/api/v1/me',
      '/api/v1/agents',
      `/api/v1/agents/${agentId}`,
      `/api/v1/agents/${agentId}/credentials`,
      `/api/v1/agents/${secondId}`,
      '/api/v1/tokens',
      '/api/v1/invites',
      '/api/v1/audit/events?limit=500',
      '/api/v1/audit/export',
    ]) {
      await send(`read ${url}`, { method: 'GET', url, bearer: apiToken });
    }
    for (const url of ['/dashboard', '/profile', '/dashboard/settings/tokens', '/dashboard/audit']) {
      await send(`page ${url}`, { method: 'GET', url, cookie });
    }

    // The vault really holds the values (so finding none is not vacuous), also after a data-key rotation.
    const tenantId = (await send('me', { method: 'GET', url: '/api/v1/me', bearer: apiToken })).json<{
      tenant_id: string;
    }>().tenant_id;
    await ctx.testApp.vault.rotateTenantKey(ctx.db.app, tenantId, 'operator:cli');
    const held = await withTenant(ctx.db.app, tenantId, (tx) =>
      ctx.testApp.vault.lendCredential(tx, { tenantId, agentId, name: 'echo_token' }, (b) =>
        b.toString('utf8'),
      ),
    );
    assert.equal(held, credentials.rotated);

    const places: { label: string; text: string; hands: readonly string[] }[] = [
      ...responses,
      ...ctx.testApp.logLines().map((text) => ({ label: 'app log', text, hands: [] })),
      ...worker.logLines().map((text) => ({ label: 'worker log', text, hands: [] })),
      ...(await dumpEveryTable()).map((text) => ({ label: 'database', text, hands: [] })),
    ];
    assert.ok(places.length > 100, `searched ${places.length} places`);
    const hits: string[] = [];
    for (const secret of [...planted, ...minted]) {
      for (const form of encodings(secret)) {
        for (const place of places) {
          if (place.hands.includes(secret)) continue;
          // The dev outbox holds the recovery and invite mails by design (development only): their links are the mail.
          if (
            (secret === link.token || secret === inviteToken) &&
            place.text.startsWith('enclave.dev_outbox')
          )
            continue;
          if (place.text.includes(form))
            hits.push(`${place.label}: ${secret.slice(0, 14)}… as ${form.slice(0, 12)}…`);
        }
      }
    }
    assert.deepEqual(hits, []);
  });
});
