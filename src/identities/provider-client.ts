import * as oauth from 'openid-client';
import { IdentityError } from './errors.ts';
import type { GithubProvider, IdentityProvider, OidcProvider } from './providers.ts';

// The network side of a provider sign-in, through openid-client: the
// authorization URL (code flow, PKCE S256, state, and a nonce for OIDC), and
// the callback's code exchanged for who the person is. openid-client checks
// the state, the issuer (RFC 9207 `iss`), and the ID token's signature, iss,
// aud, exp, iat and nonce. GitHub is plain OAuth 2.0: its token endpoint
// through the same library, then its REST API for the user and their emails.
//
// The provider's tokens live only in this module's locals: they are never
// returned, stored, logged or put in an error (errors carry a code only).

/** Who the provider says the person is. */
export interface ProviderIdentity {
  readonly issuer: string;
  /** The provider's id of the person: `sub`, or GitHub's numeric user id. */
  readonly subject: string;
  /** Lower-cased; present only when the provider says it is verified. */
  readonly verifiedEmail: string | undefined;
  /** A username suggestion (preferred_username, GitHub's login). */
  readonly username: string | undefined;
}

/** The values a flow derives from its browser secret (flows.ts) that the provider must echo back. */
export interface FlowChecks {
  readonly state: string;
  readonly nonce: string;
  readonly codeVerifier: string;
}

export interface ProviderClient {
  authorizationUrl(provider: IdentityProvider, redirectUri: string, checks: FlowChecks): Promise<URL>;
  /** The identity a callback URL (the provider's redirect back, with its query) proves. */
  identify(provider: IdentityProvider, callbackUrl: URL, checks: FlowChecks): Promise<ProviderIdentity>;
}

const GITHUB_SCOPES = 'read:user user:email';

/** A failure's stable reason for the audit log: the library's code, never its message (which may quote a response). */
export function failureReason(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[A-Z0-9_]{1,80}$/.test(code) ? code : 'provider_error';
}

function failed(provider: IdentityProvider, error: unknown): IdentityError {
  return new IdentityError('identity_failed', `${provider.label} did not confirm who you are.`, {
    reason: failureReason(error),
  });
}

function isHttp(url: string): boolean {
  return url.startsWith('http:');
}

function githubConfiguration(provider: GithubProvider): oauth.Configuration {
  const config = new oauth.Configuration(
    {
      issuer: provider.webUrl,
      authorization_endpoint: `${provider.webUrl}/login/oauth/authorize`,
      token_endpoint: `${provider.webUrl}/login/oauth/access_token`,
    },
    provider.clientId,
    undefined,
    oauth.ClientSecretPost(provider.clientSecret),
  );
  // Only reachable with an http URL, which configuration refuses in production (providers.ts).
  if (isHttp(provider.webUrl)) oauth.allowInsecureRequests(config);
  return config;
}

async function oidcConfiguration(provider: OidcProvider): Promise<oauth.Configuration> {
  return oauth.discovery(
    new URL(provider.issuer),
    provider.clientId,
    undefined,
    oauth.ClientSecretBasic(provider.clientSecret),
    isHttp(provider.issuer) ? { execute: [oauth.allowInsecureRequests] } : {},
  );
}

interface GithubUser {
  readonly id: number;
  readonly login: string;
}

interface GithubEmail {
  readonly email: string;
  readonly primary: boolean;
  readonly verified: boolean;
}

// GitHub's answers are untrusted input: each field is checked before use.
async function githubGet(provider: GithubProvider, path: string, accessToken: string): Promise<unknown> {
  const response = await fetch(`${provider.apiUrl}${path}`, {
    headers: {
      accept: 'application/vnd.github+json',
      authorization: `Bearer ${accessToken}`,
      'user-agent': 'Enclave',
      'x-github-api-version': '2022-11-28',
    },
    signal: AbortSignal.timeout(15_000),
  });
  if (!response.ok)
    throw Object.assign(new Error(`GitHub ${path}: ${response.status}`), { code: 'GITHUB_API_ERROR' });
  return response.json();
}

function githubUser(value: unknown): GithubUser {
  const user = value as Partial<GithubUser> | null;
  if (typeof user?.id !== 'number' || !Number.isSafeInteger(user.id) || typeof user.login !== 'string') {
    throw Object.assign(new Error('GitHub /user: unexpected answer'), { code: 'GITHUB_API_ERROR' });
  }
  return { id: user.id, login: user.login };
}

/** GitHub's verified primary address, lower-cased; undefined when the primary one is not verified. */
function verifiedPrimary(value: unknown): string | undefined {
  if (!Array.isArray(value)) return undefined;
  const primary = (value as Partial<GithubEmail>[]).find((entry) => entry?.primary === true);
  if (primary?.verified !== true || typeof primary.email !== 'string') return undefined;
  return primary.email.trim().toLowerCase();
}

function stringClaim(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

export function createProviderClient(): ProviderClient {
  // Discovery once per provider and process, on first use: start-up does not wait on providers.
  const configurations = new Map<string, Promise<oauth.Configuration>>();
  const configuration = (provider: IdentityProvider): Promise<oauth.Configuration> => {
    let found = configurations.get(provider.name);
    if (found === undefined) {
      found =
        provider.kind === 'github'
          ? Promise.resolve(githubConfiguration(provider))
          : oidcConfiguration(provider);
      // A provider that was down is asked again next time.
      found.catch(() => configurations.delete(provider.name));
      configurations.set(provider.name, found);
    }
    return found;
  };

  async function oidcIdentity(
    config: oauth.Configuration,
    tokens: oauth.TokenEndpointResponse & oauth.TokenEndpointResponseHelpers,
  ): Promise<ProviderIdentity> {
    const idToken = tokens.claims();
    if (idToken === undefined)
      throw Object.assign(new Error('no ID token'), { code: 'OAUTH_MISSING_ID_TOKEN' });
    // Providers that keep the email out of the ID token answer it at userinfo, for the same subject.
    const claims: Record<string, unknown> =
      idToken.email === undefined && config.serverMetadata().userinfo_endpoint !== undefined
        ? { ...(await oauth.fetchUserInfo(config, tokens.access_token, idToken.sub)), ...idToken }
        : idToken;
    const email = stringClaim(claims.email);
    return {
      issuer: idToken.iss,
      subject: idToken.sub,
      // Only `email_verified: true` counts: absent, false or "true" as text is unverified.
      verifiedEmail: email !== undefined && claims.email_verified === true ? email.toLowerCase() : undefined,
      username: stringClaim(claims.preferred_username) ?? stringClaim(claims.nickname),
    };
  }

  async function githubIdentity(provider: GithubProvider, accessToken: string): Promise<ProviderIdentity> {
    const user = githubUser(await githubGet(provider, '/user', accessToken));
    const emails = await githubGet(provider, '/user/emails', accessToken);
    return {
      issuer: provider.webUrl,
      subject: String(user.id),
      verifiedEmail: verifiedPrimary(emails),
      username: user.login,
    };
  }

  return {
    async authorizationUrl(provider, redirectUri, checks) {
      const config = await configuration(provider).catch((error: unknown) => {
        throw failed(provider, error);
      });
      const parameters: Record<string, string> = {
        redirect_uri: redirectUri,
        response_type: 'code',
        state: checks.state,
        code_challenge: await oauth.calculatePKCECodeChallenge(checks.codeVerifier),
        code_challenge_method: 'S256',
      };
      if (provider.kind === 'oidc') {
        parameters.scope = provider.scopes.join(' ');
        parameters.nonce = checks.nonce;
      } else {
        parameters.scope = GITHUB_SCOPES;
      }
      return oauth.buildAuthorizationUrl(config, parameters);
    },

    async identify(provider, callbackUrl, checks) {
      try {
        const config = await configuration(provider);
        const tokens = await oauth.authorizationCodeGrant(config, callbackUrl, {
          pkceCodeVerifier: checks.codeVerifier,
          expectedState: checks.state,
          // GitHub is not OpenID Connect: no ID token, so no nonce to check.
          ...(provider.kind === 'oidc'
            ? { expectedNonce: checks.nonce, idTokenExpected: true }
            : { idTokenExpected: false }),
        });
        return provider.kind === 'oidc'
          ? await oidcIdentity(config, tokens)
          : await githubIdentity(provider, tokens.access_token);
      } catch (error) {
        throw failed(provider, error);
      }
    },
  };
}
