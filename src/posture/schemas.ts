import { Type } from 'typebox';

// The documented shape of /security.json (OPS-5), version 1. The body is
// signed as it is served (detached JWS in the X-Enclave-Signature header and at
// /security.json.sig); every field below is part of what the signature covers.

const Hex32 = Type.String({ pattern: '^[0-9a-f]{64}$' });
const Time = Type.String({ format: 'date-time' });

const NamedTests = Type.Object({
  file: Type.String({ description: 'Test file, relative to the repository root.' }),
  titles: Type.Array(Type.String(), {
    description: 'Titles of its tests that prove the control; a title ending in "…" is shortened.',
  }),
});

export const SecurityControlSchema = Type.Object({
  id: Type.String({ description: 'Control ID of the catalog, e.g. TEN-1.' }),
  status: Type.Union([Type.Literal('enforced'), Type.Literal('partial'), Type.Literal('unproven')], {
    description:
      'enforced: docs/controls.md says so and every test it names exists; partial: only part is delivered; unproven: a test it names was not found, so it is not claimed.',
  }),
  documented_status: Type.String({ description: 'The status cell of docs/controls.md as written.' }),
  promise: Type.String({ description: 'What the control promises, as docs/controls.md words it.' }),
  code: Type.String({ description: 'Where it is enforced (Markdown, as in docs/controls.md).' }),
  tests: Type.Array(NamedTests),
});

export const PostureRunSchema = Type.Object({
  check: Type.Union(
    [
      Type.Literal('chain_integrity'),
      Type.Literal('tenant_isolation'),
      Type.Literal('retention_slo'),
      Type.Literal('key_hygiene'),
      Type.Literal('checkpoint_freshness'),
    ],
    { description: 'Which verifier.' },
  ),
  result: Type.Union(
    [Type.Literal('pass'), Type.Literal('failed'), Type.Literal('error'), Type.Literal('not_run')],
    {
      description:
        'pass; failed (the verifier ran and found a fault); error (the verifier itself did not finish); not_run (no run recorded yet).',
    },
  ),
  started_at: Type.Union([Time, Type.Null()]),
  finished_at: Type.Union([Time, Type.Null()]),
  duration_ms: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()]),
  summary: Type.String({ description: 'One line: what the run found.' }),
  details: Type.Record(Type.String(), Type.Unknown(), {
    description: 'The figures behind the result (counts, ages, the first fault found).',
  }),
  stale: Type.Boolean({
    description:
      'true when this run finished more than twice posture_interval_minutes ago: the verifier has stopped running, so its result, a pass included, is not current. false for not_run.',
  }),
});

export const SecurityDocumentSchema = Type.Object(
  {
    format: Type.Literal('enclave-security/1'),
    origin: Type.String({ description: 'The platform (ENCLAVE_PUBLIC_URL).' }),
    contact: Type.Union([Type.String(), Type.Null()], {
      description:
        'Where to report a vulnerability (ENCLAVE_SECURITY_CONTACT), as in /.well-known/security.txt.',
    }),
    controls: Type.Array(SecurityControlSchema),
    posture_interval_minutes: Type.Integer({
      minimum: 5,
      maximum: 1440,
      description: 'How often each verifier runs (ENCLAVE_POSTURE_INTERVAL_MINUTES).',
    }),
    posture: Type.Array(PostureRunSchema, { description: 'The latest run of each verifier.' }),
    checkpoint: Type.Union(
      [
        Type.Object({
          size: Type.String({ pattern: '^[0-9]+$', description: 'Leaves in the checkpoint log.' }),
          root: Hex32,
          signed_at: Time,
          note: Type.String({ description: 'The C2SP signed note, as /audit/checkpoint serves it.' }),
        }),
        Type.Null(),
      ],
      { description: 'The latest signed audit checkpoint; null before the first.' },
    ),
    backup_drill: Type.Union(
      [
        Type.Object({
          ok: Type.Boolean({ description: 'Whether the restored copy passed every check.' }),
          started_at: Time,
          finished_at: Time,
          checks: Type.Array(
            Type.Object({
              name: Type.String({
                description: 'backup, restore, migrations, row counts, audit chains, credentials.',
              }),
              ok: Type.Boolean(),
              detail: Type.String({
                description: 'One line: counts, a table, or the first failing tenant id.',
              }),
            }),
          ),
        }),
        Type.Null(),
      ],
      { description: 'The latest `enclave drill` (OPS-4) run against this database; null before the first.' },
    ),
    sbom: Type.Union(
      [
        Type.Object({
          file: Type.String({ description: 'The CycloneDX SBOM of this build (npm run sbom).' }),
          sha256: Hex32,
        }),
        Type.Null(),
      ],
      { description: 'SHA-256 of the SBOM the running build carries; null when it carries none.' },
    ),
  },
  { description: 'Controls, live posture and the latest checkpoint, signed by the operator key (OPS-5).' },
);
