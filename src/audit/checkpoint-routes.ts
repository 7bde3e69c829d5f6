import { PassThrough } from 'node:stream';
import type { Sql } from 'postgres';
import { Type } from 'typebox';
import { signedIn } from '../accounts/principal.ts';
import { authorize } from '../accounts/roles.ts';
import type { Principal } from '../accounts/service.ts';
import { AppError } from '../errors.ts';
import type { App } from '../http/app.ts';
import { ProblemSchema } from '../http/problems.ts';
import type { RateLimits } from '../http/rate-limits.ts';
import { curlExample } from '../http/schemas.ts';
import { type BundleSources, type LineSink, writeAuditBundle } from './bundle-export.ts';
import {
  checkpointOfSize,
  latestCheckpoint,
  loadConsistencyProof,
  loadTenantProof,
} from './checkpoint-log.ts';

// The checkpoint log over HTTP (AUD-4, AUD-5, AUD-8). Public, no auth: the
// latest signed checkpoint, any checkpoint by size, and the verifier key —
// what anyone needs to watch the log. Signed in: the tenant's own leaf with
// its inclusion proof and consistency proofs, and the tenant's recovery
// bundle for enclave-verify.

// At most 18 digits: every size fits PostgreSQL's bigint (19 digits could pass 2^63 - 1 and fail there).
const Size = Type.String({
  pattern: '^(?:0|[1-9][0-9]{0,17})$',
  description: 'a tree size, decimal, below 10^18',
});
const Hashes = Type.Array(Type.String({ description: 'base64 SHA-256 hash' }));
const errors = {
  400: ProblemSchema,
  401: ProblemSchema,
  403: ProblemSchema,
  404: ProblemSchema,
  429: ProblemSchema,
};
/** A signed note or key, as served: text/plain (the type lets the handler send the string as it is). */
const note = (description: string) => ({
  description,
  content: { 'text/plain': { schema: Type.String() } },
});

const ProofResponse = Type.Object({
  checkpoint: Type.Union([
    Type.Object({ size: Size, root: Type.String(), note: Type.String() }),
    Type.Null(),
  ]),
  leaf: Type.Union([
    Type.Object({ index: Size, tenant: Type.String(), seq: Type.Integer(), hash: Type.String() }),
    Type.Null(),
  ]),
  inclusion_proof: Hashes,
  consistency: Type.Union([Type.Object({ old_size: Size, new_size: Size, proof: Hashes }), Type.Null()]),
});

const NOTE_TYPE = 'text/plain; charset=utf-8';
const base64 = (hashes: readonly Buffer[]) => hashes.map((hash) => hash.toString('base64'));

/** The tenant whose log the principal reads; forbidden for a role without 'audit.read'. */
function auditTenantOf(principal: Principal | undefined): string {
  // Routes below all declare auth: 'user', so the hook has refused anonymous requests.
  if (principal === undefined) throw new Error('route reached without a principal');
  authorize(principal, 'audit.read');
  return principal.user.tenant_id;
}

/** Writes lines to a stream, waiting when it is full and failing once the client is gone. */
function streamSink(stream: PassThrough): LineSink {
  return async (line) => {
    if (stream.destroyed) throw new Error('the client went away');
    if (stream.write(`${line}\n`)) return;
    await new Promise<void>((resolve, reject) => {
      const settle = (error?: Error) => {
        stream.off('drain', onDrain);
        stream.off('close', onClose);
        if (error === undefined) resolve();
        else reject(error);
      };
      const onDrain = () => settle();
      const onClose = () => settle(new Error('the client went away'));
      stream.on('drain', onDrain);
      stream.on('close', onClose);
    });
  };
}

export function registerCheckpointRoutes(
  app: App,
  deps: { sql: Sql; sources: BundleSources; rateLimits: Pick<RateLimits, 'consume'> },
): void {
  const { sql, sources, rateLimits } = deps;

  app.get(
    '/audit/checkpoint',
    {
      config: { auth: 'none' },
      schema: {
        operationId: 'getLatestCheckpoint',
        summary: 'The latest signed checkpoint of the audit log (C2SP signed note)',
        tags: ['audit'],
        response: { 200: note('The C2SP signed note'), 404: ProblemSchema, 503: ProblemSchema },
      },
    },
    async (_request, reply) => {
      const checkpoint = await latestCheckpoint(sql);
      if (checkpoint === undefined) throw new AppError('not_found', 'no checkpoint has been made yet');
      return reply.type(NOTE_TYPE).header('cache-control', 'no-cache').send(checkpoint.note);
    },
  );

  app.get(
    '/audit/checkpoints/:size',
    {
      config: { auth: 'none' },
      schema: {
        operationId: 'getCheckpoint',
        summary: 'The signed checkpoint of one tree size (never changes once made)',
        tags: ['audit'],
        params: Type.Object({ size: Size }, { additionalProperties: false }),
        response: {
          200: note('The C2SP signed note'),
          400: ProblemSchema,
          404: ProblemSchema,
          503: ProblemSchema,
        },
      },
    },
    async (request, reply) => {
      const checkpoint = await checkpointOfSize(sql, BigInt(request.params.size));
      if (checkpoint === undefined) throw new AppError('not_found', 'no checkpoint of this size');
      return reply
        .type(NOTE_TYPE)
        .header('cache-control', 'public, max-age=31536000, immutable')
        .send(checkpoint.note);
    },
  );

  app.get(
    '/.well-known/enclave-checkpoint-key',
    {
      config: { auth: 'none' },
      schema: {
        operationId: 'getCheckpointKey',
        summary: 'The verifier key of the audit checkpoints (C2SP note key: name+keyID+base64 Ed25519 key)',
        tags: ['audit'],
        response: { 200: note('The verifier key, one line') },
      },
    },
    async (_request, reply) => reply.type(NOTE_TYPE).send(`${sources.signing.verifierKey}\n`),
  );

  app.get(
    '/api/v1/audit/proof',
    {
      config: { auth: 'user' },
      schema: {
        operationId: 'getAuditProof',
        summary:
          "The tenant's newest leaf in the latest checkpoint with its inclusion proof, and a consistency proof between two checkpoint sizes when asked",
        tags: ['audit'],
        querystring: Type.Object(
          { old_size: Type.Optional(Size), new_size: Type.Optional(Size) },
          { additionalProperties: false },
        ),
        response: { 200: ProofResponse, ...errors },
      },
    },
    async (request) => {
      const tenantId = auditTenantOf(request.principal);
      await rateLimits.consume('audit_proof', signedIn(request).user.id);
      const { old_size: oldText, new_size: newText } = request.query;
      return request.withTenant(async (tx) => {
        const proof = await loadTenantProof(tx, tenantId, { newestOnly: true });
        let consistency: { old_size: string; new_size: string; proof: string[] } | null = null;
        if (oldText !== undefined || newText !== undefined) {
          // Attacker-controlled: both sizes. Only recorded checkpoints, 0 < old ≤ new, are answered.
          const newSize = newText === undefined ? proof.checkpoint?.size : BigInt(newText);
          const oldSize = oldText === undefined ? undefined : BigInt(oldText);
          if (oldSize === undefined || newSize === undefined) {
            throw new AppError(
              'bad_request',
              'a consistency proof needs old_size (and a checkpoint to prove it against)',
            );
          }
          if (oldSize < 1n || oldSize > newSize)
            throw new AppError('bad_request', 'need 0 < old_size ≤ new_size');
          for (const size of [oldSize, newSize]) {
            if ((await checkpointOfSize(tx, size)) === undefined) {
              throw new AppError('not_found', `no checkpoint of size ${size}`);
            }
          }
          consistency = {
            old_size: oldSize.toString(),
            new_size: newSize.toString(),
            proof: base64(await loadConsistencyProof(tx, oldSize, newSize)),
          };
        }
        const { checkpoint } = proof;
        const leaf = proof.leaves.at(-1);
        return {
          checkpoint:
            checkpoint === undefined
              ? null
              : {
                  size: checkpoint.size.toString(),
                  root: checkpoint.root.toString('base64'),
                  note: checkpoint.note,
                },
          leaf:
            leaf === undefined
              ? null
              : {
                  index: leaf.index.toString(),
                  tenant: leaf.tenant,
                  seq: leaf.seq,
                  hash: leaf.hash.toString('hex'),
                },
          inclusion_proof: base64(leaf?.inclusion ?? []),
          consistency,
        };
      });
    },
  );

  app.get(
    '/api/v1/audit/bundle',
    {
      config: { auth: 'user' },
      schema: {
        operationId: 'downloadAuditBundle',
        summary:
          "Download the tenant's recovery bundle (JSON lines): events, archive segments, the latest checkpoint and proofs, the verifier key. Check it offline with enclave-verify.",
        tags: ['audit'],
        ...curlExample('GET', '/api/v1/audit/bundle'),
        querystring: Type.Object(
          {
            consistency_from: Type.Optional(
              Type.String({
                pattern: '^[0-9]{1,18}(?:,[0-9]{1,18}){0,9}$',
                description: 'earlier checkpoint sizes',
              }),
            ),
          },
          { additionalProperties: false },
        ),
        response: {
          200: {
            description: 'The bundle: one JSON object per line',
            // Sent as a stream: the schema documents the body, the type lets the handler send a PassThrough.
            content: { 'application/x-ndjson': { schema: Type.Unsafe<PassThrough>(Type.String()) } },
          },
          ...errors,
        },
      },
    },
    async (request, reply) => {
      const tenantId = auditTenantOf(request.principal);
      await rateLimits.consume('audit_proof', signedIn(request).user.id);
      const consistencyFrom = (request.query.consistency_from?.split(',') ?? []).map((size) => BigInt(size));
      const stream = new PassThrough({ highWaterMark: 1024 * 1024 });
      const sink = streamSink(stream);
      // The transaction lives as long as the download; its end ends the stream.
      request
        .withTenant((tx) => writeAuditBundle(tx, tenantId, sources, sink, { consistencyFrom }))
        .then(
          () => stream.end(),
          (error: unknown) => {
            request.log.warn({ err: error }, 'audit bundle download ended early');
            stream.destroy(error instanceof Error ? error : new Error(String(error)));
          },
        );
      return reply
        .type('application/x-ndjson; charset=utf-8')
        .header('content-disposition', `attachment; filename="enclave-audit-${tenantId}.jsonl"`)
        .header('cache-control', 'no-store')
        .send(stream);
    },
  );
}
