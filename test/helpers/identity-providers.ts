import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import Provider, { type KoaContextWithOIDC } from 'oidc-provider';
import type { App } from '../../src/http/app.ts';
import { randomClientIp } from './accounts.ts';

// Real sign-in providers for tests, on local ports: OpenID Providers from the
// `oidc-provider` package (each its own issuer, with a client for the app and
// one for another app), and a fake GitHub answering at its network boundary
// only (token, /user, /user/emails). A provider signs in whichever account
// the test names next, with no form (a custom interaction). `misbehave`
// makes the real provider issue a bad ID token the way a broken or hostile
// provider would: for another audience, expired, or with no or another nonce.

export interface TestPerson {
  readonly sub: string;
  readonly email: string;
  readonly email_verified: boolean;
  readonly preferred_username?: string;
}

export type Misbehaviour = 'none' | 'other_audience' | 'expired' | 'no_nonce' | 'wrong_nonce';

export interface TestOpenIdProvider {
  readonly issuer: string;
  readonly clientId: string;
  /** Who signs in at the next login interaction. */
  signInAs(person: TestPerson): void;
  misbehave(mode: Misbehaviour): void;
  /** Every access, ID and refresh token this provider has issued (to search the database and logs for). */
  issuedTokens(): string[];
  close(): Promise<void>;
}

function listen(server: http.Server): Promise<string> {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () =>
      resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`),
    );
  });
}

function close(server: http.Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

export async function startOpenIdProvider(options: {
  redirectUri: string;
  clientId: string;
  clientSecret: string;
}): Promise<TestOpenIdProvider> {
  const server = http.createServer();
  const issuer = await listen(server);
  let next: TestPerson | undefined;
  let mode: Misbehaviour = 'none';
  const people = new Map<string, TestPerson>();
  const issued: string[] = [];
  const jwk = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: options.clientId,
        client_secret: options.clientSecret,
        redirect_uris: [options.redirectUri],
        grant_types: ['authorization_code'],
        response_types: ['code'],
      },
      // Another application at the same provider: an ID token for it must not sign in to ours.
      {
        client_id: 'another-app',
        client_secret: randomBytes(24).toString('hex'),
        redirect_uris: ['http://127.0.0.1:1/callback'],
      },
    ],
    jwks: { keys: [{ ...jwk, kid: 'test', use: 'sig', alg: 'RS256' }] },
    cookies: { keys: [randomBytes(16).toString('hex')] },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['preferred_username'] },
    features: { devInteractions: { enabled: false } },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    // First-party clients: no consent screen; the grant covers what was asked.
    loadExistingGrant: async (ctx: KoaContextWithOIDC) => {
      const { oidc } = ctx;
      const client = oidc.client;
      const accountId = oidc.session?.accountId;
      if (client === undefined || accountId === undefined) return undefined;
      const grantId = oidc.result?.consent?.grantId ?? oidc.session?.grantIdFor(client.clientId);
      if (grantId !== undefined) return oidc.provider.Grant.find(grantId);
      const grant = new oidc.provider.Grant({ clientId: client.clientId, accountId });
      grant.addOIDCScope(String(oidc.params?.scope ?? 'openid'));
      await grant.save();
      return grant;
    },
    findAccount: (_ctx, id) => {
      const person = people.get(id);
      if (person === undefined) return undefined;
      return {
        accountId: id,
        claims: () => ({ ...person }),
      };
    },
  });
  // A real provider's own token issuing, bent on request (see Misbehaviour).
  const IdToken = provider.IdToken as unknown as {
    prototype: {
      issue(this: IdTokenInstance, options: { use: string; expiresAt?: number }): Promise<string>;
    };
  };
  interface IdTokenInstance {
    client: unknown;
    extra: Record<string, unknown>;
  }
  const issue = IdToken.prototype.issue;
  IdToken.prototype.issue = async function (this: IdTokenInstance, issueOptions) {
    if (issueOptions.use === 'idtoken') {
      if (mode === 'other_audience') this.client = await provider.Client.find('another-app');
      if (mode === 'no_nonce') delete this.extra.nonce;
      if (mode === 'wrong_nonce') this.extra.nonce = randomBytes(16).toString('base64url');
      if (mode === 'expired') {
        return issue.call(this, { ...issueOptions, expiresAt: Math.floor(Date.now() / 1000) - 600 });
      }
    }
    return issue.call(this, issueOptions);
  };
  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (req.url?.startsWith('/interaction/')) {
      void (async () => {
        const person = next;
        if (person === undefined) throw new Error('the test named nobody to sign in (signInAs)');
        people.set(person.sub, person);
        await provider.interactionFinished(
          req,
          res,
          { login: { accountId: person.sub } },
          { mergeWithLastSubmission: false },
        );
      })().catch((error: unknown) => {
        res.statusCode = 500;
        res.end(String(error));
      });
      return;
    }
    // Every response body of the token endpoint is kept, to search for its tokens later.
    if (req.url?.startsWith('/token')) {
      const end = res.end.bind(res);
      res.end = ((chunk?: unknown, ...rest: unknown[]) => {
        if (chunk !== undefined && chunk !== null) {
          const body = JSON.parse(String(chunk)) as Record<string, unknown>;
          for (const key of ['access_token', 'id_token', 'refresh_token']) {
            if (typeof body[key] === 'string') issued.push(body[key]);
          }
        }
        return (end as (...args: unknown[]) => http.ServerResponse)(chunk, ...rest);
      }) as typeof res.end;
    }
    callback(req, res);
  });
  return {
    issuer,
    clientId: options.clientId,
    signInAs(person) {
      next = person;
      people.set(person.sub, person);
    },
    misbehave(newMode) {
      mode = newMode;
    },
    issuedTokens: () => [...issued],
    close: () => close(server),
  };
}

export interface GithubPerson {
  readonly id: number;
  readonly login: string;
  readonly emails: readonly { email: string; primary: boolean; verified: boolean }[];
}

export interface FakeGithub {
  readonly url: string;
  signInAs(person: GithubPerson): void;
  issuedTokens(): string[];
  close(): Promise<void>;
}

/**
 * GitHub at its network boundary: /login/oauth/authorize redirects straight
 * back with a code, /login/oauth/access_token checks the client, the code and
 * its PKCE verifier, and /user and /user/emails answer for the token.
 */
export async function startFakeGithub(options: {
  clientId: string;
  clientSecret: string;
}): Promise<FakeGithub> {
  const server = http.createServer();
  const url = await listen(server);
  let next: GithubPerson | undefined;
  const codes = new Map<string, { person: GithubPerson; challenge: string; redirectUri: string }>();
  const tokens = new Map<string, GithubPerson>();
  const json = (res: http.ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  server.on('request', (req, res) => {
    const at = new URL(req.url ?? '/', url);
    if (at.pathname === '/login/oauth/authorize') {
      const person = next;
      const redirectUri = at.searchParams.get('redirect_uri') ?? '';
      if (person === undefined || at.searchParams.get('client_id') !== options.clientId)
        return json(res, 400, {});
      const code = randomBytes(10).toString('hex');
      codes.set(code, { person, challenge: at.searchParams.get('code_challenge') ?? '', redirectUri });
      const back = new URL(redirectUri);
      back.searchParams.set('code', code);
      back.searchParams.set('state', at.searchParams.get('state') ?? '');
      res.writeHead(302, { location: back.href });
      res.end();
      return;
    }
    if (at.pathname === '/login/oauth/access_token' && req.method === 'POST') {
      let body = '';
      req.on('data', (chunk: Buffer) => {
        body += chunk.toString();
      });
      req.on('end', () => {
        const form = new URLSearchParams(body);
        const grant = codes.get(form.get('code') ?? '');
        codes.delete(form.get('code') ?? '');
        const verifier = form.get('code_verifier') ?? '';
        const challenge = createHash('sha256').update(verifier).digest('base64url');
        if (
          grant === undefined ||
          form.get('client_id') !== options.clientId ||
          form.get('client_secret') !== options.clientSecret ||
          form.get('redirect_uri') !== grant.redirectUri ||
          challenge !== grant.challenge
        ) {
          return json(res, 200, { error: 'bad_verification_code' });
        }
        const token = `gho_${randomBytes(18).toString('hex')}`;
        tokens.set(token, grant.person);
        json(res, 200, { access_token: token, token_type: 'bearer', scope: 'read:user,user:email' });
      });
      return;
    }
    const person = tokens.get((req.headers.authorization ?? '').replace(/^Bearer /, ''));
    if (person === undefined) return json(res, 401, { message: 'Bad credentials' });
    if (at.pathname === '/api/user') return json(res, 200, { id: person.id, login: person.login });
    if (at.pathname === '/api/user/emails') return json(res, 200, person.emails);
    json(res, 404, { message: 'Not Found' });
  });
  return {
    url,
    signInAs(person) {
      next = person;
    },
    issuedTokens: () => [...tokens.keys()],
    close: () => close(server),
  };
}

/** Writes a providers file and secret files into `dir`; returns the app's env for them. */
export async function providerEnv(
  dir: string,
  oidc: readonly { name: string; label: string; issuer: string; clientId: string; clientSecret: string }[],
  github?: { url: string; clientId: string; clientSecret: string },
): Promise<Record<string, string>> {
  const entries = [];
  for (const provider of oidc) {
    const secretFile = path.join(dir, `${provider.name}.secret`);
    await writeFile(secretFile, `${provider.clientSecret}\n`, { mode: 0o600 });
    entries.push({
      name: provider.name,
      label: provider.label,
      issuer: provider.issuer,
      client_id: provider.clientId,
      client_secret_file: secretFile,
    });
  }
  const file = path.join(dir, 'providers.json');
  await writeFile(file, JSON.stringify(entries));
  const env: Record<string, string> = { ENCLAVE_OIDC_PROVIDERS_FILE: file };
  if (github !== undefined) {
    const secretFile = path.join(dir, 'github.secret');
    await writeFile(secretFile, github.clientSecret, { mode: 0o600 });
    Object.assign(env, {
      ENCLAVE_GITHUB_CLIENT_ID: github.clientId,
      ENCLAVE_GITHUB_CLIENT_SECRET_FILE: secretFile,
      ENCLAVE_GITHUB_URL: github.url,
      ENCLAVE_GITHUB_API_URL: `${github.url}/api`,
    });
  }
  return env;
}

/**
 * A browser without a screen: follows redirects, keeps each origin's cookies,
 * and sends requests for the app's origin to app.inject (everything else over
 * the network). Returns the last response.
 */
export interface Browser {
  go(
    url: string,
    options?: {
      method?: 'GET' | 'POST';
      form?: Record<string, string>;
      /** Stops before requesting a URL for which this is true (to tamper with a callback); its response is undefined. */
      stopAt?: (url: URL) => boolean;
    },
  ): Promise<{ status: number; url: string; body: string; location: string | undefined }>;
  cookie(origin: string, name: string): string | undefined;
  setCookie(origin: string, name: string, value: string): void;
  /** Sends requests for the app's origin to another app from now on (a restart). */
  useApp(app: App): void;
}

export function startBrowser(initialApp: App, appOrigin: string): Browser {
  let app = initialApp;
  // Each browser is its own client, so one file's sign-ups do not share a per-address bucket (signup_ip: 10 an hour).
  const remoteAddress = randomClientIp();
  const jars = new Map<string, Map<string, string>>();
  const jar = (origin: string) => {
    let found = jars.get(origin);
    if (found === undefined) {
      found = new Map();
      jars.set(origin, found);
    }
    return found;
  };
  const remember = (origin: string, setCookie: string[] | string | undefined) => {
    const all = setCookie === undefined ? [] : Array.isArray(setCookie) ? setCookie : [setCookie];
    for (const line of all) {
      const [pair = ''] = line.split(';');
      const index = pair.indexOf('=');
      const name = pair.slice(0, index).trim();
      const value = pair.slice(index + 1).trim();
      if (/max-age=0|expires=thu, 01 jan 1970/i.test(line) || value === '') jar(origin).delete(name);
      else jar(origin).set(name, value);
    }
  };
  const cookieHeader = (origin: string) =>
    [...jar(origin)].map(([name, value]) => `${name}=${value}`).join('; ');
  return {
    async go(start, options = {}) {
      let url = new URL(start, appOrigin);
      let method = options.method ?? 'GET';
      let body = options.form === undefined ? undefined : new URLSearchParams(options.form).toString();
      for (let hop = 0; hop < 20; hop += 1) {
        if (options.stopAt?.(url) === true)
          return { status: 0, url: url.href, body: '', location: undefined };
        const headers: Record<string, string> = {
          cookie: cookieHeader(url.origin),
          'user-agent': 'enclave-tests',
        };
        if (body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
        if (method === 'POST') headers.origin = appOrigin;
        let status: number;
        let location: string | undefined;
        let refreshHeader: string | undefined;
        let text: string;
        if (url.origin === appOrigin) {
          const response = await app.inject({
            method,
            url: `${url.pathname}${url.search}`,
            remoteAddress,
            headers,
            ...(body === undefined ? {} : { payload: body }),
          });
          remember(url.origin, response.headers['set-cookie']);
          status = response.statusCode;
          location = response.headers.location as string | undefined;
          refreshHeader = response.headers.refresh as string | undefined;
          text = response.body;
        } else {
          const response = await fetch(url, {
            method,
            headers,
            redirect: 'manual',
            ...(body === undefined ? {} : { body }),
          });
          remember(url.origin, response.headers.getSetCookie());
          status = response.status;
          location = response.headers.get('location') ?? undefined;
          refreshHeader = response.headers.get('refresh') ?? undefined;
          text = await response.text();
        }
        // A page that moves on by itself (`Refresh: 0;url=…`) is followed as a browser does.
        const refresh = status === 200 ? /^0;url=(.+)$/.exec(refreshHeader ?? '')?.[1] : undefined;
        const next = refresh ?? (status >= 300 && status < 400 ? location : undefined);
        if (next === undefined) return { status, url: url.href, body: text, location };
        url = new URL(next, url);
        method = 'GET';
        body = undefined;
      }
      throw new Error(`more than 20 redirects from ${start}`);
    },
    cookie: (origin, name) => jar(origin).get(name),
    setCookie: (origin, name, value) => {
      jar(origin).set(name, value);
    },
    useApp(next) {
      app = next;
    },
  };
}
