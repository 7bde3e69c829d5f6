import { isAppError } from '../errors.ts';
import {
  DEFAULT_PAGE,
  type ListScope,
  type PageCursors,
  type PageRequest,
  type PositionedRow,
  pageOf,
} from '../http/page-cursor.ts';
import { type Frame, type Html, html, page } from './html.ts';

// The dashboard's lists, a page at a time, with the JSON API's cursors: the
// same `?after=` of the same list (src/http/page-cursor.ts), so a page's link
// and the API's `next_after` are interchangeable, and one of another list,
// user or tenant is refused the same way, here as a page of its own.

/** Where a list page is and what follows it: the links under its table. */
export interface ListPager {
  /** The page's path, without a query: the first page. */
  readonly path: string;
  /** The cursor of the next page; null on the last. */
  readonly next: string | null;
  /** This is a later page (it was asked for with a cursor). */
  readonly later: boolean;
  /** A filter the list was asked with (e.g. agent_id), kept in both links. */
  readonly query?: Readonly<Record<string, string>> | undefined;
}

export interface ListPage<T> {
  readonly rows: T[];
  readonly pager: ListPager;
}

/**
 * One page of a dashboard list: DEFAULT_PAGE rows after the query's `after`.
 * Undefined when `after` is not a cursor of this list (the caller answers
 * with badCursorPage); the query is attacker-controlled and nothing of it is
 * read before its MAC checks out.
 */
export async function readListPage<T extends PositionedRow>(
  cursors: PageCursors,
  scope: ListScope,
  path: string,
  query: unknown,
  read: (page: PageRequest) => Promise<readonly T[]>,
): Promise<ListPage<Omit<T, keyof PositionedRow>> | undefined> {
  const after = (query as { after?: unknown } | undefined)?.after;
  // A repeated ?after= arrives as an array: no cursor of ours.
  if (after !== undefined && typeof after !== 'string') return undefined;
  let position: PageRequest['after'];
  try {
    position = cursors.open(scope, after);
  } catch (error) {
    if (isAppError(error) && error.code === 'cursor_invalid') return undefined;
    throw error;
  }
  const page = pageOf(await read({ after: position, limit: DEFAULT_PAGE }), DEFAULT_PAGE, (last) =>
    cursors.seal(scope, last),
  );
  return { rows: page.rows, pager: { path, next: page.next, later: after !== undefined } };
}

/** The links between a list's pages; nothing when it fits on one. */
export function pagerNav(pager: ListPager, label: string): Html {
  if (pager.next === null && !pager.later) return html``;
  const filter = new URLSearchParams(pager.query);
  const first = filter.size === 0 ? pager.path : `${pager.path}?${filter}`;
  const next =
    pager.next === null ? '' : `${pager.path}?${new URLSearchParams({ ...pager.query, after: pager.next })}`;
  return html`<nav class="pager" aria-label="${label}">${
    pager.later ? html`<a href="${first}">First page</a>` : ''
  }${next === '' ? '' : html`<a href="${next}" rel="next">Next page</a>`}</nav>`;
}

/** The answer to a page link that is not one of this list's (400). */
export function badCursorPage(frame: Frame, what: string, path: string): string {
  return page(
    'No such page',
    html`<h1>No such page</h1>
<p>That link to a page of ${what} is not valid here: it was changed, or it belongs to another list, account or
tenant.</p>
<p><a href="${path}">Go to the first page</a></p>`,
    frame,
  );
}
