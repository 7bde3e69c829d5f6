import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config.ts';
import { AppError } from '../errors.ts';
import { DOCS_UI_PREFIX } from '../web/docs-page.ts';
import type { App } from './app.ts';

// TEN-8: one check that every customer-facing JSON response passes before it
// is serialized. Response schemas are allowlists already; this is the second,
// global line: it walks the payload (objects and arrays, bounded depth) and
// looks for any operator-internal field name, wherever it is nested, whatever
// the route. No route is exempt.
//
// It runs as a `preSerialization` hook, which Fastify calls for every object
// payload, including problem documents (sendProblem sends an object with its
// own serializer, which still passes this hook). Strings, buffers and streams
// (HTML pages, the ndjson exports) are bodies the route renders itself; they
// do not pass here.
//
// What happens on a violation is the choice of this file:
// - development (and the tests, which run with ENCLAVE_ENV=development): the
//   response becomes a 500 `internal` problem, and the violation is logged
//   with the field's path (never its value). A leak breaks the test suite.
// - production: the violation is logged at error level with the path, and the
//   field is removed from the response. Fail closed for the customer (the
//   internal field never leaves), loud for the operator (an error-level line
//   to alert on), without turning a leak into an outage of the route.

/**
 * Field names that belong to the operator and never appear in a customer
 * response, at any depth. Compared after normalizing (lower case, `_` and `-`
 * removed), so `token_hash`, `tokenHash` and `Token-Hash` are all caught.
 * (`client_ip` is deliberately not here: users see their own sessions' IPs.)
 */
export const OPERATOR_INTERNAL_FIELDS: Readonly<Record<string, string>> = {
  password_hash: 'scrypt hash of a password: offline-guessable, the server alone verifies it',
  token_hash: 'SHA-256 of a session, API, invite or link token: the lookup key that makes a token valid',
  session_key: 'operator secret that signs session cookies',
  canonical_key: 'the vault key material in canonical form, before it is wrapped',
  wrapped_key: "a tenant data key wrapped under a master key: the vault's stored key material",
  data_key: "a tenant's data key: decrypts every credential of the tenant",
  master_key: 'the master key: unwraps every tenant data key',
  ciphertext: 'an encrypted credential: write-only for customers, decrypted only at the moment of use',
  nonce: 'AES-GCM nonce of a vault ciphertext: only useful with the ciphertext, never shown',
  tag: 'AES-GCM authentication tag of a vault ciphertext: never shown',
  secret: 'any secret value the server holds (signing keys, SMTP password, credential values)',
  password: 'a plaintext password: accepted as input, never sent back',
};

/** Deeper than this, a payload is itself a violation (our responses are a few levels deep). */
export const MAX_DEPTH = 16;

function normalize(name: string): string {
  return name.toLowerCase().replace(/[_-]/g, '');
}

const INTERNAL = new Set(Object.keys(OPERATOR_INTERNAL_FIELDS).map(normalize));

/**
 * Verdicts by field name, so a response's keys (the same few on every
 * request) are not lower-cased and stripped each time. Bounded: field names
 * can come from customers (audit event data), so it stops growing when full.
 */
const verdicts = new Map<string, boolean>();
const MAX_VERDICTS = 10_000;

export function isOperatorInternalField(name: string): boolean {
  let internal = verdicts.get(name);
  if (internal === undefined) {
    internal = INTERNAL.has(normalize(name));
    if (verdicts.size < MAX_VERDICTS) verdicts.set(name, internal);
  }
  return internal;
}

export interface Violation {
  /** Where the field is: `$.a.b[2].token_hash`. The path only, never the value. */
  readonly path: string;
  readonly reason: 'operator-internal field' | 'too deep';
}

function isPlainObject(value: object): value is Record<string, unknown> {
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

/**
 * Returns the payload with every violation removed (a copy where anything
 * was removed, the payload itself otherwise) and the violations found.
 */
export function checkCustomerPayload(payload: unknown): { clean: unknown; violations: Violation[] } {
  const violations: Violation[] = [];
  // A field's path is spelled out only for a violation: most payloads have none.
  const walk = (value: unknown, path: () => string, depth: number): unknown => {
    if (value === null || typeof value !== 'object') return value;
    if (depth > MAX_DEPTH) {
      violations.push({ path: path(), reason: 'too deep' });
      return undefined;
    }
    if (Array.isArray(value)) {
      let changed = false;
      const out = value.map((item, index) => {
        const next = walk(item, () => `${path()}[${index}]`, depth + 1);
        if (next !== item) changed = true;
        return next === undefined && item !== undefined ? null : next;
      });
      return changed ? out : value;
    }
    // Dates, buffers and other class instances serialize as values, not as field names.
    if (!isPlainObject(value)) return value;
    let out: Record<string, unknown> | undefined;
    for (const key in value) {
      if (!Object.hasOwn(value, key)) continue;
      const item = value[key];
      if (isOperatorInternalField(key)) {
        violations.push({ path: `${path()}.${key}`, reason: 'operator-internal field' });
        out ??= { ...value };
        delete out[key];
        continue;
      }
      if (item === null || typeof item !== 'object') continue;
      const next = walk(item, () => `${path()}.${key}`, depth + 1);
      if (next !== item) {
        out ??= { ...value };
        if (next === undefined) delete out[key];
        else out[key] = next;
      }
    }
    return out ?? value;
  };
  const clean = walk(payload, () => '$', 0);
  return { clean, violations };
}

/** The routes that answer the OpenAPI document: ours, and the one Swagger UI's plugin serves beside its files. */
const OPENAPI_DOCUMENT_ROUTES: ReadonlySet<string> = new Set([
  '/openapi.json',
  '/docs/json',
  `${DOCS_UI_PREFIX}/json`,
]);

export function registerCustomerSerializer(app: App, config: Pick<Config, 'env'>): void {
  // Synchronous (done-style), as it runs on every JSON response: the check itself does no I/O.
  app.addHook(
    'preSerialization',
    (
      request: FastifyRequest,
      _reply: FastifyReply,
      payload: unknown,
      done: (error: Error | null, value?: unknown) => void,
    ) => {
      // The OpenAPI document describes fields (a schema may well have a property named "password"); it holds no data.
      if (request.routeOptions.url !== undefined && OPENAPI_DOCUMENT_ROUTES.has(request.routeOptions.url)) {
        return done(null, payload);
      }
      const { clean, violations } = checkCustomerPayload(payload);
      if (violations.length === 0) return done(null, payload);
      const fields = violations.map((violation) => `${violation.path} (${violation.reason})`);
      const route = request.routeOptions.url ?? '(unmatched)';
      request.log.error({ route, fields }, 'TEN-8: operator-internal field in a customer response');
      if (config.env === 'production') return done(null, clean);
      // The error handler answers 500 `internal` and logs this message: paths only.
      done(
        new AppError(
          'internal',
          `TEN-8: operator-internal field in the response of ${route}: ${fields.join(', ')}`,
        ),
      );
    },
  );
}
