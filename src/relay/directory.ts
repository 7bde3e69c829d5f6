import type { Sql } from 'postgres';
import type { TemplateCatalog } from '../agents/templates.ts';
import type { PageCursors, Position } from '../http/page-cursor.ts';
import { type AgentSkillJson, buildAgentCard, cardPath } from './cards.ts';

// The relay directory (RLY-1): the agents whose listing an operator approved
// and whose card is published and unchanged since, newest listing first,
// searchable by text. An entry holds what the agent's card holds (handle,
// name, description, skills, the card's address) and nothing of its tenant
// or owner. Read across tenants through enclave.relay_directory (0020).

export const DIRECTORY_DEFAULT_PAGE = 20;
export const DIRECTORY_MAX_PAGE = 100;
export const MAX_DIRECTORY_QUERY = 100;

export interface DirectoryEntry {
  readonly handle: string;
  readonly name: string;
  readonly description: string;
  readonly skills: AgentSkillJson[];
  readonly card_url: string;
  readonly listed_at: Date;
}

export interface DirectoryPage {
  readonly entries: DirectoryEntry[];
  readonly next_after: string | null;
}

export interface DirectoryQuery {
  /** Search text; blank: every entry. */
  readonly q?: string | undefined;
  readonly after?: string | undefined;
  readonly limit?: number | undefined;
}

interface DirectoryRow {
  readonly id: string;
  readonly handle: string;
  readonly name: string;
  readonly description: string;
  readonly template_id: string;
  readonly updated_at: Date;
  readonly listed_at: Date;
  readonly page_at: string;
}

export interface DirectoryDeps {
  readonly sql: Sql;
  readonly cursors: PageCursors;
  readonly templates: Pick<TemplateCatalog, 'get' | 'list'>;
  readonly publicUrl: string;
}

/** The search text as matched: trimmed, lowercased; undefined for none. Its length is checked by the route schema. */
export function normalizeQuery(q: string | undefined): string | undefined {
  const text = q?.trim().toLowerCase();
  return text === undefined || text === '' ? undefined : text;
}

/**
 * One page of the directory for a reader of `tenantId`. The cursor is sealed
 * for this reader's tenant and this search text: another search's or
 * tenant's cursor is a 400 cursor_invalid.
 */
export async function readDirectory(
  deps: DirectoryDeps,
  tenantId: string,
  query: DirectoryQuery,
): Promise<DirectoryPage> {
  const q = normalizeQuery(query.q);
  const limit = query.limit ?? DIRECTORY_DEFAULT_PAGE;
  const scope = { list: 'directory', tenantId, of: q ?? '' };
  // after is attacker-controlled: opened only if it carries our MAC for this tenant and search.
  const after: Position | undefined = deps.cursors.open(scope, query.after);
  // The skills' words live in the template catalog, not the database: match them here.
  const templates =
    q === undefined
      ? []
      : deps.templates
          .list()
          .filter((t) => `${t.id} ${t.name} ${t.description}`.toLowerCase().includes(q))
          .map((t) => t.id);
  const rows = await deps.sql<DirectoryRow[]>`
    select id, handle, name, description, template_id, updated_at, listed_at,
           to_char(listed_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as page_at
    from enclave.relay_directory(${q ?? null}, ${templates}::text[],
      ${after?.at ?? null}::text::timestamptz, ${after?.id ?? null}::uuid, ${limit + 1}::int4)`;
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  return {
    entries: page.map((row) => entryOf(deps, row)),
    next_after:
      rows.length > limit && last !== undefined
        ? deps.cursors.seal(scope, { at: last.page_at, id: last.id })
        : null,
  };
}

function entryOf(deps: Pick<DirectoryDeps, 'templates' | 'publicUrl'>, row: DirectoryRow): DirectoryEntry {
  // The card's own words, built as the card is: the directory never says more, or other, than the card.
  const card = buildAgentCard(
    deps.publicUrl,
    {
      handle: row.handle,
      name: row.name,
      description: row.description,
      template: row.template_id,
      updated_at: row.updated_at,
    },
    deps.templates.get(row.template_id),
  );
  return {
    handle: row.handle,
    name: card.name,
    description: card.description,
    skills: card.skills,
    card_url: `${deps.publicUrl}${cardPath(row.handle)}`,
    listed_at: row.listed_at,
  };
}
