import { PassThrough, type Readable } from 'node:stream';
import type { PendingQuery, Row, Sql } from 'postgres';
import { type TenantSql, withTenant } from '../db/tenant.ts';
import { GENESIS_HASH } from './event.ts';

// Reading a tenant's audit log (AUD-6). Every query runs in a transaction
// bound to the reader's tenant, and row-level security on audit_events and
// audit_heads is what keeps it to that tenant: none of these functions names
// a tenant in its SQL. Hashes leave as lowercase hex, seq as a number.

/** One event as the API, the page and the export give it: everything needed to verify it. */
export interface StoredAuditEvent {
  readonly seq: number;
  readonly ts: string;
  readonly actor: string;
  readonly action: string;
  readonly target: string | null;
  readonly data: Record<string, unknown>;
  /** Lowercase hex of the previous event's hash (32 zero bytes for seq 1). */
  readonly prev_hash: string;
  /** Lowercase hex of SHA-256(prev_hash ‖ UTF-8(canonical)). */
  readonly hash: string;
  /** The exact text that was hashed. */
  readonly canonical: string;
}

export interface AuditHead {
  readonly seq: number;
  readonly hash: string;
}

/** The head of a chain with no events: seq 0 and the genesis hash (64 zeros). */
export const EMPTY_HEAD: AuditHead = { seq: 0, hash: GENESIS_HASH.toString('hex') };

/** Events per cursor batch of an export: what one export holds in memory at a time. */
export const EXPORT_BATCH = 500;
/** The most events one API page returns. */
export const MAX_PAGE = 500;

type EventRow = Omit<StoredAuditEvent, 'seq'> & { seq: string };

// The ts column is rebuilt in the event's own format (RFC 3339 UTC, milliseconds), the one in `canonical`.
const EVENT_COLUMNS = `seq, to_char(occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as ts,
  actor, action, target, data, encode(prev_hash, 'hex') as prev_hash, encode(hash, 'hex') as hash, canonical`;

function fromRow(row: EventRow): StoredAuditEvent {
  return { ...row, seq: Number(row.seq) };
}

export interface EventPage {
  /** Events with seq greater than this (ascending), or… */
  readonly after?: number | undefined;
  /** …with seq less than this (returned newest first). Neither: the newest events, newest first. */
  readonly before?: number | undefined;
  readonly limit: number;
  /** Only events with exactly this action. */
  readonly action?: string | undefined;
  /** Skip events with exactly this action (the page folds system.service_query). */
  readonly without?: string | undefined;
}

/**
 * A page of the bound tenant's events. With `after`, ascending from it;
 * otherwise descending from `before` (or from the head).
 */
export async function listAuditEvents(tx: TenantSql, page: EventPage): Promise<StoredAuditEvent[]> {
  const limit = page.limit;
  if (!Number.isSafeInteger(limit) || limit < 1) throw new Error('listAuditEvents needs a positive limit');
  const rows =
    page.after !== undefined
      ? await tx<EventRow[]>`
          select ${tx.unsafe(EVENT_COLUMNS)} from audit_events
          where seq > ${page.after} ${actionFilter(tx, page)}
          order by seq limit ${limit}`
      : await tx<EventRow[]>`
          select ${tx.unsafe(EVENT_COLUMNS)} from audit_events
          where true ${page.before === undefined ? tx`` : tx`and seq < ${page.before}::bigint`}
            ${actionFilter(tx, page)}
          order by seq desc limit ${limit}`;
  return rows.map(fromRow);
}

/**
 * The action conditions as SQL only when asked for: a condition written as
 * `(param is null or action = param)` cannot use audit_events_action once the
 * statement runs on a generic plan, and a filter matching nothing would then
 * read the whole log.
 */
function actionFilter(
  tx: TenantSql,
  filter: { readonly action?: string | undefined; readonly without?: string | undefined },
): PendingQuery<Row[]> {
  const only = filter.action === undefined ? tx`` : tx`and action = ${filter.action}::text`;
  return filter.without === undefined ? only : tx`${only} and action <> ${filter.without}::text`;
}

/** Whether the bound tenant has events with seq in the open interval (from, to), for paging links. */
export async function hasAuditEventsBetween(
  tx: TenantSql,
  range: { from: number; to: number | null; action?: string | undefined; without?: string | undefined },
): Promise<boolean> {
  const [row] = await tx<{ found: boolean }[]>`
    select exists (
      select 1 from audit_events
      where seq > ${range.from} ${range.to === null ? tx`` : tx`and seq < ${range.to}::bigint`}
        ${actionFilter(tx, range)}) as found`;
  return row?.found === true;
}

/** How many events with `action` lie in seq from..to, both included. */
export async function countAuditEventsBetween(
  tx: TenantSql,
  range: { from: number; to: number; action: string },
): Promise<number> {
  const [row] = await tx<{ count: number }[]>`
    select count(*)::int4 as count from audit_events
    where seq between ${range.from} and ${range.to} and action = ${range.action}::text`;
  return row?.count ?? 0;
}

/**
 * The distinct actions in the bound tenant's log, for the page's filter. A
 * skip scan over audit_events_action (0014): each step jumps to the next
 * action greater than the last, so it costs one index probe per action, a few
 * dozen, however long the log (select distinct would read every event).
 */
export async function listAuditActions(tx: TenantSql): Promise<string[]> {
  const rows = await tx<{ action: string }[]>`
    with recursive actions (action) as (
      (select action from audit_events order by action limit 1)
      union all
      select (select e.action from audit_events e where e.action > a.action order by e.action limit 1)
      from actions a where a.action is not null
    )
    select action from actions where action is not null`;
  return rows.map((row) => row.action);
}

/** The bound tenant's chain head; EMPTY_HEAD before its first event. */
export async function readAuditHead(tx: TenantSql): Promise<AuditHead> {
  const [row] = await tx<{ seq: string; hash: string }[]>`
    select seq, encode(hash, 'hex') as hash from audit_heads`;
  return row === undefined ? EMPTY_HEAD : { seq: Number(row.seq), hash: row.hash };
}

/** One export line: an event with its tenant, as JSON. */
export interface ExportLine extends StoredAuditEvent {
  readonly tenant: string;
}

class ExportAborted extends Error {}

/** Writes a chunk, waiting while the reader is behind; throws once the reader has gone. */
async function write(out: PassThrough, chunk: string): Promise<void> {
  if (out.destroyed) throw new ExportAborted('the export reader went away');
  if (out.write(chunk)) return;
  await new Promise<void>((resolve, reject) => {
    const done = (error?: Error) => {
      out.off('drain', onDrain);
      out.off('close', onClose);
      if (error === undefined) resolve();
      else reject(error);
    };
    const onDrain = () => done();
    const onClose = () => done(new ExportAborted('the export reader went away'));
    out.on('drain', onDrain);
    out.on('close', onClose);
  });
}

/**
 * The tenant's whole log as JSON lines in seq order, streamed from one
 * transaction bound to the tenant through a cursor: at most EXPORT_BATCH
 * events are in memory at once, and the transaction stays open until the
 * last line is read (or the reader goes away, which ends it).
 */
export function exportAuditLog(sql: Sql, tenantId: string): Readable {
  const out = new PassThrough();
  const streamed = withTenant(sql, tenantId, async (tx) => {
    const rows = tx<EventRow[]>`select ${tx.unsafe(EVENT_COLUMNS)} from audit_events order by seq`;
    for await (const batch of rows.cursor(EXPORT_BATCH)) {
      let chunk = '';
      for (const row of batch) {
        const line: ExportLine = { tenant: tenantId, ...fromRow(row) };
        chunk += `${JSON.stringify(line)}\n`;
      }
      await write(out, chunk);
    }
  });
  void streamed.then(
    () => out.end(),
    (error: unknown) => {
      if (!(error instanceof ExportAborted))
        out.destroy(error instanceof Error ? error : new Error(String(error)));
    },
  );
  return out;
}
