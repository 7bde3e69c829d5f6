import helmet from '@fastify/helmet';
import type { Config } from '../config.ts';
import type { App } from './app.ts';

// OPS-3: a strict Content-Security-Policy (no inline script or style, nothing
// from other origins), no framing, HSTS in production only (a development
// server on http://localhost must not pin HTTPS for the whole host).
export async function registerSecurityHeaders(app: App, config: Pick<Config, 'env'>): Promise<void> {
  const production = config.env === 'production';
  await app.register(helmet, {
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
  });
}
