import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { SESSION_COOKIE } from '../src/accounts/sessions.ts';
import { createLogger } from '../src/logger.ts';
import { mintToken } from '../src/tokens.ts';
import { createAccount, mintInvite, randomClientIp, uniqueName } from './helpers/accounts.ts';
import { useTestApp } from './helpers/app.ts';
import { setCookies } from './helpers/pages.ts';

// Attack: someone who can read the server's logs (a log shipper, a support
// engineer, a leaked archive) lifts credentials from them: passwords, API
// tokens, session cookies or invite links.

const ctx = useTestApp();
/** Every credential the requests below carry; none may reach a log line. */
const secrets = new Set<string>();

function keep(secret: string): string {
  secrets.add(secret);
  return secret;
}

function form(fields: Record<string, string>): string {
  return new URLSearchParams(fields).toString();
}

function sessionFrom(response: { headers: Record<string, unknown> }): string | undefined {
  const cookie = setCookies(response).find(
    (c) => c.startsWith(`${SESSION_COOKIE}=`) && !c.startsWith(`${SESSION_COOKIE}=;`),
  );
  if (cookie === undefined) return undefined;
  const value = cookie.slice(SESSION_COOKIE.length + 1, cookie.indexOf(';'));
  // Both the signed cookie value and the raw token inside it are credentials.
  keep(value);
  keep(decodeURIComponent(value));
  keep(decodeURIComponent(value).slice(0, decodeURIComponent(value).lastIndexOf('.')));
  return `${SESSION_COOKIE}=${value}`;
}

function parsed(lines: string[]): Record<string, unknown>[] {
  return lines.map((line) => JSON.parse(line) as Record<string, unknown>);
}

describe('logs', () => {
  test('OPS-1: no log line carries a password, API token, session cookie or invite token across a whole account lifecycle', async () => {
    const inject = ctx.testApp.app.inject.bind(ctx.testApp.app);
    const origin = ctx.testApp.config.publicUrl;
    const formHeaders = { origin, 'content-type': 'application/x-www-form-urlencoded' };
    const hasPages =
      ctx.testApp.app.hasRoute({ method: 'POST', url: '/signup' }) &&
      ctx.testApp.app.hasRoute({ method: 'POST', url: '/login' });

    // Signup and login: through the pages when they exist, else through the service.
    const username = uniqueName();
    const email = `${username}@example.test`;
    const password = keep(`pw-${uniqueName('secret')}-long`);
    const invite = await mintInvite(ctx.db, { kind: 'tenant', email });
    keep(invite.token);
    let cookie: string;
    if (hasPages) {
      await inject({ method: 'GET', url: `/signup?invite=${invite.token}` });
      const signup = await inject({
        method: 'POST',
        url: '/signup',
        headers: formHeaders,
        payload: form({ invite: invite.token, email, username, password }),
        remoteAddress: randomClientIp(),
      });
      assert.equal(signup.statusCode, 303, signup.body);
      assert.ok(sessionFrom(signup) !== undefined);
      // A failed login, a login with an unknown name, then a good one.
      for (const attempt of [
        { login: username, password: keep('wrong-password-canary-1') },
        { login: uniqueName('ghost'), password: keep('wrong-password-canary-2') },
      ]) {
        const failed = await inject({
          method: 'POST',
          url: '/login',
          headers: formHeaders,
          payload: form(attempt),
          remoteAddress: randomClientIp(),
        });
        assert.equal(failed.statusCode, 401);
      }
      const login = await inject({
        method: 'POST',
        url: '/login',
        headers: formHeaders,
        payload: form({ login: email, password }),
        remoteAddress: randomClientIp(),
      });
      assert.equal(login.statusCode, 303, login.body);
      cookie = sessionFrom(login) ?? '';
    } else {
      const account = await createAccount(ctx.db, ctx.testApp, { username, email, password });
      keep(account.sessionToken);
      keep(account.apiToken);
      cookie = account.sessionCookie;
      keep(decodeURIComponent(cookie.slice(SESSION_COOKIE.length + 1)));
    }

    // Token mint, use, revoke.
    const minted = await inject({
      method: 'POST',
      url: '/api/v1/tokens',
      headers: { cookie, origin, 'content-type': 'application/json' },
      payload: JSON.stringify({ name: 'ci' }),
    });
    assert.equal(minted.statusCode, 201, minted.body);
    const token = minted.json<{ token: string; id: string }>();
    keep(token.token);
    assert.equal(
      (
        await inject({
          method: 'GET',
          url: '/api/v1/me',
          headers: { authorization: `Bearer ${token.token}` },
        })
      ).statusCode,
      200,
    );
    const revoked = await inject({
      method: 'DELETE',
      url: `/api/v1/tokens/${token.id}`,
      headers: { authorization: `Bearer ${token.token}` },
    });
    assert.equal(revoked.statusCode, 204);

    // Refused credentials: the revoked token, a wrong-kind token, a tampered cookie, a cross-site request.
    const wrongKind = keep(mintToken('relay').token);
    for (const headers of [
      { authorization: `Bearer ${token.token}` },
      { authorization: `Bearer ${wrongKind}` },
      { authorization: `Bearer ${keep('garbage-bearer-canary')}` },
      { cookie: `${cookie}x` },
    ]) {
      assert.equal((await inject({ method: 'GET', url: '/api/v1/me', headers })).statusCode, 401);
    }
    const csrf = await inject({
      method: 'POST',
      url: '/api/v1/tokens',
      headers: { cookie, origin: 'https://evil.example', 'content-type': 'application/json' },
      payload: JSON.stringify({ name: 'forged' }),
    });
    assert.equal(csrf.statusCode, 403);
    // A body that is refused, holding a password in an unknown field.
    const refused = await inject({
      method: 'POST',
      url: '/api/v1/tokens',
      headers: { cookie, origin, 'content-type': 'application/json' },
      payload: JSON.stringify({ name: 'x', password: keep('password-in-body-canary') }),
    });
    assert.equal(refused.statusCode, 400);
    assert.ok(!refused.body.includes('password-in-body-canary'));
    // A token in a query string (for example a mistyped link).
    await inject({ method: 'GET', url: `/api/v1/me?token=${keep(mintToken('live').token)}` });

    const lines = ctx.testApp.logLines();
    assert.ok(lines.length > 10, 'the requests were logged');
    for (const secret of secrets) {
      for (const line of lines) {
        assert.ok(
          !line.includes(secret),
          `a log line contains a credential (${secret.slice(0, 12)}…): ${line}`,
        );
      }
    }
  });

  test('OPS-1: request log lines carry the route pattern, not the path with its ids', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    const response = await ctx.testApp.app.inject({
      method: 'DELETE',
      url: `/api/v1/tokens/${account.apiTokenId}`,
      headers: { authorization: `Bearer ${account.apiToken}` },
    });
    assert.equal(response.statusCode, 204);
    const requestLines = parsed(ctx.testApp.logLines()).filter((line) => line.msg === 'request');
    const line = requestLines.find((l) => l.reqId === response.headers['x-request-id']);
    assert.ok(line !== undefined);
    assert.equal(line.route, '/api/v1/tokens/:id');
    assert.equal(line.method, 'DELETE');
    assert.equal(line.status, 204);
    assert.ok(!JSON.stringify(line).includes(account.apiTokenId));
  });

  test('OPS-1: the logger redacts password, token, cookie and authorization fields wherever code logs them', () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString('utf8'));
        done();
      },
    });
    const logger = createLogger('info', sink);
    const canary = 'redaction-canary-9f2c';
    logger.info({
      password: canary,
      token: canary,
      secret: canary,
      cookie: canary,
      authorization: canary,
      headers: { authorization: canary, cookie: canary, 'set-cookie': canary },
      req: { headers: { authorization: canary, cookie: canary } },
      form: { password: canary, token: canary },
      connectionString: canary,
    });
    assert.equal(lines.length, 1);
    assert.ok(!lines[0]?.includes(canary), lines[0]);
    assert.match(lines[0] ?? '', /\[redacted\]/);
  });
});
