import { createHmac, timingSafeEqual } from 'node:crypto';
import type { PendingQuery, Row, TransactionSql } from 'postgres';
import { Type } from 'typebox';
import { AppError } from '../errors.ts';

// Keyset pages for the JSON API's lists, in the style of /api/v1/audit/events:
// `?after=&limit=` in, `next_after` out (null on the last page). The audit log
// pages by its seq, a plain integer that is only ever a position in the
// reader's own chain. Other lists page by (time, id) of their last row, sealed
// in an opaque cursor.
//
// A cursor is bound to its tenant and its list by an HMAC (key derived from the
// session key), not by looking its row up again: a check costs no query, keeps
// working when the row it points past was deleted, and a cursor from another
// tenant, another user's or agent's list, or another list fails the MAC.
// Even a forged position could only ever be a bound parameter in a query that
// row-level security already limits to the reader's tenant: the MAC is what
// makes a foreign cursor a 400 rather than a harmless page.

export const DEFAULT_PAGE = 100;
export const MAX_PAGE = 500;
const MAX_CURSOR_CHARACTERS = 256;
const LABEL = 'enclave page cursor v1';
const AT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Where a page ends: the sort time (UTC, microseconds) and id of its last row. */
export interface Position {
  readonly at: string;
  readonly id: string;
}

/** Which list a cursor belongs to: its name, the tenant, and the user or agent it is of (if any). */
export interface ListScope {
  readonly list: string;
  readonly tenantId: string;
  readonly of?: string;
}

export interface PageCursors {
  seal(scope: ListScope, position: Position): string;
  /** The position in `cursor`; undefined for no cursor; a 400 cursor_invalid for any other list's, or none of ours. */
  open(scope: ListScope, cursor: string | undefined): Position | undefined;
}

export function createPageCursors(sessionKey: string): PageCursors {
  const key = createHmac('sha256', sessionKey).update(LABEL).digest();
  const mac = (scope: ListScope, payload: string) =>
    createHmac('sha256', key)
      .update(`${scope.list}\n${scope.tenantId}\n${scope.of ?? ''}\n${payload}`)
      .digest();
  const invalid = () => new AppError('cursor_invalid', 'is not a cursor of this list', { field: 'after' });
  return {
    seal(scope, position) {
      const payload = Buffer.from(JSON.stringify([position.at, position.id])).toString('base64url');
      return `${payload}.${mac(scope, payload).toString('base64url')}`;
    },
    open(scope, cursor) {
      if (cursor === undefined) return undefined;
      // The cursor is attacker-controlled: nothing in it is read before its MAC checks out in constant time.
      const [payload = '', tag = '', ...rest] = cursor.split('.');
      const given = Buffer.from(tag, 'base64url');
      const expected = mac(scope, payload);
      if (rest.length > 0 || given.length !== expected.length || !timingSafeEqual(given, expected)) {
        throw invalid();
      }
      const position: unknown = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
      if (!Array.isArray(position) || position.length !== 2) throw invalid();
      const [at, id] = position as unknown[];
      if (typeof at !== 'string' || typeof id !== 'string' || !AT.test(at) || !UUID.test(id)) throw invalid();
      return { at, id };
    },
  };
}

/** `?after=&limit=` of a paged list. Only the length of after is checked here: every other fault is cursor_invalid. */
export const PageQuery = Type.Object(
  {
    after: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: MAX_CURSOR_CHARACTERS,
        description:
          'The `next_after` of the previous page. A cursor of another list or tenant, or altered, is refused with 400 cursor_invalid',
      }),
    ),
    limit: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: MAX_PAGE,
        default: DEFAULT_PAGE,
        description: `Rows per page, 1 to ${MAX_PAGE}`,
      }),
    ),
  },
  { additionalProperties: false },
);

export const NextAfter = Type.Union([Type.String(), Type.Null()], {
  description: 'Pass as `after` for the next page; null on the last page',
});

/** The bound of a row's sort key: its time as exact UTC text, so a page boundary loses no microsecond. */
export function positionColumns(tx: TransactionSql, column: string): PendingQuery<Row[]> {
  return tx`to_char(${tx(column)} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as page_at, id as page_id`;
}

/**
 * The bound tenant, stated in the query. Row-level security already limits a
 * read to it, but ORs in the lookup policy (src/db/lookup.ts) that finds a
 * row by token or login before any tenant is bound; under that OR the planner
 * cannot walk a (tenant_id, time, id) index in order, and reads and sorts the
 * whole table instead. This condition narrows the read and never widens it.
 */
export function boundTenant(tx: TransactionSql, column = tx`tenant_id`): PendingQuery<Row[]> {
  return tx`${column} = enclave.current_tenant_id()`;
}

/** `and (column, id) > or < position`, or nothing on the first page. */
export function afterPosition(
  tx: TransactionSql,
  column: string,
  order: 'asc' | 'desc',
  position: Position | undefined,
): PendingQuery<Row[]> {
  if (position === undefined) return tx``;
  // ::text first: a parameter typed timestamptz would be sent by the driver through a JS Date, losing microseconds.
  const bound = tx`(${position.at}::text::timestamptz, ${position.id}::uuid)`;
  return order === 'asc' ? tx`and (${tx(column)}, id) > ${bound}` : tx`and (${tx(column)}, id) < ${bound}`;
}

/** What a paged read asks for: the rows past `after`, at most `limit` (the read takes one more, to know if more follow). */
export interface PageRequest {
  readonly after: Position | undefined;
  readonly limit: number;
}

export interface PositionedRow {
  readonly page_at: string;
  readonly page_id: string;
}

/**
 * A page from `limit + 1` rows read: the first `limit`, without their
 * position columns, and the cursor past the last when there were more.
 */
export function pageOf<T extends PositionedRow>(
  rows: readonly T[],
  limit: number,
  seal: (position: Position) => string,
): { rows: Omit<T, keyof PositionedRow>[]; next: string | null } {
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  return {
    rows: page.map(({ page_at: _at, page_id: _id, ...row }) => row),
    next: rows.length > limit && last !== undefined ? seal({ at: last.page_at, id: last.page_id }) : null,
  };
}

/** Opens the cursor of `query` for `scope`, reads one page with `read`, and seals the cursor past it. */
export async function readPage<T extends PositionedRow>(
  cursors: PageCursors,
  scope: ListScope,
  query: { readonly after?: string | undefined; readonly limit?: number | undefined },
  read: (page: PageRequest) => Promise<readonly T[]>,
): Promise<{ rows: Omit<T, keyof PositionedRow>[]; next: string | null }> {
  const limit = query.limit ?? DEFAULT_PAGE;
  const rows = await read({ after: cursors.open(scope, query.after), limit });
  return pageOf(rows, limit, (position) => cursors.seal(scope, position));
}
