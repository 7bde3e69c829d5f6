import type { App } from './app.ts';
import { sendProblem } from './problems.ts';

// ACC-4: a state-changing request that could carry an ambient credential (a
// cookie) must come from our own origin: its Origin header equals the public
// URL's origin, or, with no Origin, Sec-Fetch-Site says same-origin. Checked
// in onRequest, before the body is parsed or any handler runs. Requests
// authenticated by a Bearer token carry no ambient credential and are exempt,
// as are routes that declare `bearerOnly`: they read no cookie at all, so a
// request without a Bearer token is refused by the route itself (401).

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The route authenticates by a Bearer token only and never reads a cookie (the relay's data plane). */
    bearerOnly?: boolean;
  }
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

export function registerCsrfCheck(app: App, publicUrl: string): void {
  const expected = new URL(publicUrl).origin;
  // Synchronous (done-style), as it runs on every request: no promise for the common case of a GET.
  app.addHook('onRequest', (request, reply, done) => {
    if (SAFE_METHODS.has(request.method)) return done();
    if (/^Bearer\s/i.test(request.headers.authorization ?? '')) return done();
    if (request.routeOptions.config.bearerOnly === true) return done();
    // Both headers are attacker-influenced only from a non-browser client, which holds no victim's cookie.
    const origin = request.headers.origin;
    const fetchSite = request.headers['sec-fetch-site'];
    const sameOrigin = origin !== undefined ? origin === expected : fetchSite === 'same-origin';
    if (!sameOrigin) {
      request.log.info(
        { origin: origin ?? null, fetchSite: fetchSite ?? null },
        'cross-site request refused',
      );
      // Answered here: the hook chain stops without done().
      sendProblem(request, reply, 'csrf_rejected');
      return;
    }
    done();
  });
}
