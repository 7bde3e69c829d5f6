import assert from 'node:assert/strict';
import type { TestAppContext } from './app.ts';
import { type Authenticator, authenticatorFrom, scanQrSvg } from './authenticator.ts';
import {
  getPage,
  PASSWORD,
  postForm,
  type SignedUp,
  sessionCookie,
  setCookies,
  signUp,
  withFlash,
} from './pages.ts';

// Driving TOTP as a user does, for the suites of src/factors: sign up,
// enrol from /profile/totp with a phone that scans the QR code
// (authenticator.ts), keep the recovery codes, sign out and in again.

export interface Enrolled {
  readonly who: SignedUp;
  readonly phone: Authenticator;
  readonly recoveryCodes: string[];
}

let users = 0;

/** The recovery codes a page lists (none on a page that shows none). */
export function shownCodesIn(page: string): string[] {
  return [...page.matchAll(/<li><code>([a-z0-9-]+)<\/code><\/li>/g)].map((m) => m[1] ?? '');
}

export function totpDriver(ctx: TestAppContext) {
  async function newUser(): Promise<SignedUp> {
    users += 1;
    return signUp(ctx.testApp.app, ctx.db, {
      username: `totp_user_${users}`,
      email: `totp${users}@example.com`,
    });
  }

  /** Starts enrolment and reads the QR code off the enrolment page. */
  async function startEnrolment(who: SignedUp): Promise<{ page: string; phone: Authenticator }> {
    const started = await postForm(ctx.testApp.app, '/profile/totp/start', {}, { cookie: who.cookie });
    assert.equal(started.statusCode, 303);
    assert.equal(started.headers.location, '/profile/totp/enrol');
    const page = await getPage(ctx.testApp.app, '/profile/totp/enrol', { cookie: who.cookie });
    assert.equal(page.statusCode, 200);
    return { page: page.body, phone: authenticatorFrom(scanQrSvg(page.body)) };
  }

  /** The recovery codes on the page a confirmation (or regeneration) redirects to. */
  async function shownCodes(who: SignedUp, posted: { statusCode: number; headers: Record<string, unknown> }) {
    assert.equal(posted.statusCode, 303);
    assert.equal(posted.headers.location, '/profile/totp/recovery-codes');
    const page = await getPage(ctx.testApp.app, '/profile/totp/recovery-codes', {
      cookie: withFlash(who.cookie, posted),
    });
    assert.equal(page.statusCode, 200);
    return shownCodesIn(page.body);
  }

  async function enrol(): Promise<Enrolled> {
    const who = await newUser();
    const { phone } = await startEnrolment(who);
    const confirmed = await postForm(
      ctx.testApp.app,
      '/profile/totp/confirm',
      { code: phone.code() },
      { cookie: who.cookie },
    );
    return { who, phone, recoveryCodes: await shownCodes(who, confirmed) };
  }

  async function userOf(who: SignedUp): Promise<{ id: string; tenant_id: string }> {
    const [user] = await ctx.db.superuser<{ id: string; tenant_id: string }[]>`
      select id, tenant_id from users where username = ${who.username}`;
    assert.ok(user !== undefined);
    return user;
  }

  async function factorsOf(who: SignedUp): Promise<{ id: string; kind: string; name: string }[]> {
    const rows = await ctx.db.superuser<{ id: string; kind: string; name: string }[]>`
      select f.id, f.kind, f.name from user_factors f join users u on u.id = f.user_id
      where u.username = ${who.username}`;
    return [...rows];
  }

  /** Signs in with the password; the verify page's path and the challenge's browser cookie. */
  async function passwordStep(who: SignedUp): Promise<{ path: string; cookie: string }> {
    const response = await postForm(ctx.testApp.app, '/login', { login: who.username, password: PASSWORD });
    assert.equal(response.statusCode, 303, response.body);
    const path = String(response.headers.location);
    assert.match(path, /^\/login\/verify\/[0-9a-f-]{36}$/);
    assert.equal(sessionCookie(response), undefined, 'no session before the second step');
    const cookie = setCookies(response)
      .map((line) => line.split(';')[0] ?? '')
      .find((pair) => pair.startsWith('enclave_sign_in=') && pair !== 'enclave_sign_in=');
    assert.ok(cookie !== undefined, 'the challenge cookie is set');
    return { path, cookie };
  }

  /** The code the phone shows that the server has not yet seen: now's, or the next step's if now's was used. */
  async function unusedCode(enrolled: Enrolled): Promise<string> {
    const user = await userOf(enrolled.who);
    const [row] = await ctx.db.superuser<{ last: string }[]>`
      select last_used_step::text as last from totp_secrets where user_id = ${user.id}::uuid`;
    const last = BigInt(row?.last ?? '0');
    const now = enrolled.phone.step();
    return enrolled.phone.codeAt(now > last ? now : last + 1n);
  }

  async function signOut(cookie: string): Promise<void> {
    const response = await postForm(ctx.testApp.app, '/logout', {}, { cookie });
    assert.equal(response.statusCode, 303);
  }

  async function failedAttempts(path: string): Promise<number> {
    const id = path.split('/').at(-1) ?? '';
    const [row] = await ctx.db.superuser<{ failed: number }[]>`
      select failed_attempts as failed from sign_in_challenges where id = ${id}::uuid`;
    return row?.failed ?? -1;
  }

  return {
    newUser,
    startEnrolment,
    shownCodes,
    enrol,
    userOf,
    factorsOf,
    passwordStep,
    unusedCode,
    signOut,
    failedAttempts,
  };
}
