import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Sql } from 'postgres';
import type { Static } from 'typebox';
import { latestDrill } from '../backup/drill-record.ts';
import type { Control } from './controls-catalog.ts';
import { REPO_ROOT } from './controls-catalog.ts';
import type { DetachedSigner } from './detached-jws.ts';
import { latestRuns, POSTURE_CHECKS, type PostureRun } from './runs.ts';
import { staleAfterMs } from './schedule.ts';
import type { PostureRunSchema, SecurityDocumentSchema } from './schemas.ts';

// What /security shows and /security.json serves, built from the control
// catalog (read at start), the latest verifier runs, the latest backup drill
// and the latest checkpoint, then signed as served. The signed bytes are kept
// for CACHE_MS, so a flood of requests costs one set of reads and one
// signature, and /security.json and /security.json.sig fetched together agree.

export type SecurityDocument = Static<typeof SecurityDocumentSchema>;
export type PostureEntry = Static<typeof PostureRunSchema>;

export const CACHE_MS = 5000;
/** Where `npm run sbom` writes the build's CycloneDX SBOM. */
export const SBOM_FILE = 'sbom.cdx.json';

export interface SignedDocument {
  readonly document: SecurityDocument;
  /** The exact bytes served and signed. */
  readonly body: Buffer;
  /** Detached compact JWS over `body`. */
  readonly signature: string;
}

/** SHA-256 of the SBOM at the repository root, or null when the build carries none. */
export async function readSbomDigest(root: string = REPO_ROOT): Promise<SecurityDocument['sbom']> {
  try {
    const bytes = await readFile(path.join(root, SBOM_FILE));
    return { file: SBOM_FILE, sha256: createHash('sha256').update(bytes).digest('hex') };
  } catch {
    return null;
  }
}

/** Each check's latest run; one that finished before `staleBefore` is stale (the verifiers stopped running). */
function postureEntries(runs: readonly PostureRun[], staleBefore: number): PostureEntry[] {
  const byCheck = new Map(runs.map((run) => [run.check, run]));
  return POSTURE_CHECKS.map((check) => {
    const run = byCheck.get(check);
    if (run === undefined) {
      return {
        check,
        result: 'not_run',
        started_at: null,
        finished_at: null,
        duration_ms: null,
        summary: 'no run recorded yet',
        details: {},
        stale: false,
      };
    }
    const { summary, ...details } = run.details;
    return {
      check,
      result: run.result,
      started_at: run.startedAt.toISOString(),
      finished_at: run.finishedAt.toISOString(),
      duration_ms: run.durationMs,
      summary,
      details,
      stale: run.finishedAt.getTime() < staleBefore,
    };
  });
}

export interface SecurityDocumentDeps {
  readonly sql: Sql;
  readonly origin: string;
  readonly contact: string | undefined;
  readonly controls: readonly Control[];
  readonly sbom: SecurityDocument['sbom'];
  readonly signer: DetachedSigner;
  /** ENCLAVE_POSTURE_INTERVAL_MINUTES: shown, and a latest run older than twice it is stale. */
  readonly postureIntervalMinutes: number;
}

export function createSecurityDocuments(deps: SecurityDocumentDeps) {
  const controls: SecurityDocument['controls'] = deps.controls.map((control) => ({
    id: control.id,
    status: control.status,
    documented_status: control.documented,
    promise: control.promise,
    code: control.code,
    tests: control.tests.map((tests) => ({ file: tests.file, titles: [...tests.titles] })),
  }));
  let cached: { at: number; value: Promise<SignedDocument> } | undefined;

  async function build(): Promise<SignedDocument> {
    const [runs, drill, [checkpoint]] = await Promise.all([
      latestRuns(deps.sql),
      latestDrill(deps.sql),
      deps.sql<{ size: string; root: Buffer; note: string; created_at: Date }[]>`
        select c.size::text, c.root, c.note, c.created_at from checkpoints c order by c.size desc limit 1`,
    ]);
    const document: SecurityDocument = {
      format: 'enclave-security/1',
      origin: deps.origin,
      contact: deps.contact ?? null,
      controls,
      posture_interval_minutes: deps.postureIntervalMinutes,
      posture: postureEntries(runs, Date.now() - staleAfterMs(deps.postureIntervalMinutes)),
      checkpoint:
        checkpoint === undefined
          ? null
          : {
              size: checkpoint.size,
              root: checkpoint.root.toString('hex'),
              signed_at: checkpoint.created_at.toISOString(),
              note: checkpoint.note,
            },
      backup_drill:
        drill === undefined
          ? null
          : {
              ok: drill.ok,
              started_at: drill.startedAt.toISOString(),
              finished_at: drill.finishedAt.toISOString(),
              checks: drill.checks.map(({ name, ok, detail }) => ({ name, ok, detail })),
            },
      sbom: deps.sbom,
    };
    const body = Buffer.from(JSON.stringify(document));
    return { document, body, signature: deps.signer.sign(body) };
  }

  return {
    /** The current document, signed; at most CACHE_MS old. */
    current(): Promise<SignedDocument> {
      const now = Date.now();
      if (cached === undefined || now - cached.at >= CACHE_MS) {
        const value = build();
        cached = { at: now, value };
        // A failed read is not kept: the next request tries again.
        value.catch(() => {
          if (cached?.value === value) cached = undefined;
        });
      }
      return cached.value;
    },
  };
}

export type SecurityDocuments = ReturnType<typeof createSecurityDocuments>;
