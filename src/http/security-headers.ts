import type { OutgoingHttpHeaders } from 'node:http';
import helmet, { type FastifyHelmetOptions } from '@fastify/helmet';
import Fastify, { type FastifyReply } from 'fastify';
import type { Config } from '../config.ts';
import type { App } from './app.ts';

// OPS-3: a strict Content-Security-Policy (no inline script or style, nothing
// from other origins), no framing, HSTS in production only (a development
// server on http://localhost must not pin HTTPS for the whole host).
//
// The header set is static (no CSP nonces), so helmet computes it once, at
// start-up, and every request gets the same headers from one synchronous
// hook: @fastify/helmet itself rebuilds helmet's whole middleware on every
// request, which cost more than the rest of an authenticated read's hooks.

function helmetOptions(production: boolean): FastifyHelmetOptions {
  return {
    global: true,
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        'default-src': ["'none'"],
        'script-src': ["'self'"],
        'style-src': ["'self'"],
        'img-src': ["'self'", 'data:'],
        'font-src': ["'self'"],
        'connect-src': ["'self'"],
        'form-action': ["'self'"],
        'base-uri': ["'none'"],
        'frame-ancestors': ["'none'"],
        'object-src': ["'none'"],
        ...(production ? { 'upgrade-insecure-requests': [] } : {}),
      },
    },
    strictTransportSecurity: production ? { maxAge: 63072000, includeSubDomains: true } : false,
    crossOriginEmbedderPolicy: false,
    // same-origin, not no-referrer: under no-referrer browsers send "Origin: null" on
    // form posts, which the CSRF check (ACC-4) must refuse. Other sites still get no referrer.
    referrerPolicy: { policy: 'same-origin' },
    xFrameOptions: { action: 'deny' },
  };
}

/** The headers @fastify/helmet sets with `options`: what one request to a throwaway instance receives before its handler runs. */
async function helmetHeaders(options: FastifyHelmetOptions): Promise<[string, string | number | string[]][]> {
  const probe = Fastify();
  try {
    await probe.register(helmet, options);
    let headers: OutgoingHttpHeaders = {};
    probe.get('/', (_request, reply) => {
      headers = reply.raw.getHeaders();
      return '';
    });
    await probe.inject({ method: 'GET', url: '/' });
    const set = Object.entries(headers).filter(
      (entry): entry is [string, string | number | string[]] => entry[1] !== undefined,
    );
    if (set.length === 0) throw new Error('helmet set no headers: the security headers cannot be computed');
    return set;
  } finally {
    await probe.close();
  }
}

/** Sets the security headers on a response; the same headers for every response of the app. */
export type SecurityHeaders = (reply: FastifyReply) => void;

/** The app's security headers, computed once at start-up. */
export async function securityHeaders(config: Pick<Config, 'env'>): Promise<SecurityHeaders> {
  const headers = await helmetHeaders(helmetOptions(config.env === 'production'));
  return (reply) => {
    const raw = reply.raw;
    for (const [name, value] of headers) raw.setHeader(name, value);
  };
}

/**
 * Registers the security headers as the app's first onRequest hook, so every
 * response, including one refused by a later onRequest hook, carries them.
 * (Errors the router raises run no hooks: app.ts sets them there itself.)
 */
export function registerSecurityHeaders(app: App, setHeaders: SecurityHeaders): void {
  app.addHook('onRequest', (_request, reply, done) => {
    setHeaders(reply);
    done();
  });
}
