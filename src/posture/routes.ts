import type { App } from '../http/app.ts';
import { ProblemSchema } from '../http/problems.ts';
import { SecurityDocumentSchema } from './schemas.ts';
import type { SecurityDocument, SecurityDocuments, SignedDocument } from './security-document.ts';
import { renderSecurityPage } from './security-page.ts';

// OPS-5: public, no authentication. /security is the page, /security.json the
// same facts signed (detached JWS: the X-Enclave-Signature header, and
// /security.json.sig for the same bytes while they are cached),
// /.well-known/security.txt the RFC 9116 disclosure file.

export const SIGNATURE_HEADER = 'x-enclave-signature';
/** RFC 9116 §2.5.5: Expires should be less than a year ahead; the file is made per request. */
const SECURITY_TXT_DAYS = 30;

export interface SecurityRoutesDeps {
  readonly documents: SecurityDocuments;
  readonly publicUrl: string;
  readonly contact: string | undefined;
}

export function securityTxt(deps: Pick<SecurityRoutesDeps, 'publicUrl'>, contact: string, now: Date): string {
  const expires = new Date(
    Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + SECURITY_TXT_DAYS),
  );
  return [
    `Contact: ${contact}`,
    `Expires: ${expires.toISOString()}`,
    `Canonical: ${deps.publicUrl}/.well-known/security.txt`,
    `Policy: ${deps.publicUrl}/security`,
    'Preferred-Languages: en',
    '',
  ].join('\n');
}

/**
 * The signed bytes, sent as they are: Fastify sends a Buffer without
 * serializing it, so what leaves is exactly what was signed. (They are
 * JSON.stringify of `document`, which the response schema describes.)
 */
function signedBytes(signed: SignedDocument): SecurityDocument {
  return signed.body as unknown as SecurityDocument;
}

export function registerSecurityRoutes(app: App, deps: SecurityRoutesDeps): void {
  app.get(
    '/security.json',
    {
      config: { auth: 'none' },
      schema: {
        operationId: 'getSecurityDocument',
        summary: 'Controls, live posture and latest checkpoint, signed (OPS-5)',
        description:
          'The facts of /security, machine-readable. The body is signed as served with the operator Ed25519 key: a JWS with detached payload (RFC 7515 appendix F) in the X-Enclave-Signature header, also at /security.json.sig; its kid names the key in /.well-known/jwks.json.',
        tags: ['health'],
        response: { 200: SecurityDocumentSchema, 503: ProblemSchema },
      },
    },
    async (_request, reply) => {
      const signed = await deps.documents.current();
      return reply
        .header(SIGNATURE_HEADER, signed.signature)
        .header('cache-control', 'no-cache')
        .type('application/json; charset=utf-8')
        .send(signedBytes(signed));
    },
  );

  app.get(
    '/security.json.sig',
    { config: { auth: 'none' }, schema: { hide: true } },
    async (_request, reply) => {
      const signed = await deps.documents.current();
      return reply
        .header('cache-control', 'no-cache')
        .type('application/jose; charset=utf-8')
        .send(signed.signature);
    },
  );

  app.get('/security', { config: { auth: 'none' }, schema: { hide: true } }, async (_request, reply) => {
    const signed = await deps.documents.current();
    return reply
      .header('cache-control', 'no-cache')
      .type('text/html; charset=utf-8')
      .send(renderSecurityPage(signed.document));
  });

  const { contact } = deps;
  if (contact !== undefined) {
    app.get(
      '/.well-known/security.txt',
      { config: { auth: 'none' }, schema: { hide: true } },
      async (_request, reply) =>
        reply.type('text/plain; charset=utf-8').send(securityTxt(deps, contact, new Date())),
    );
  }
}
