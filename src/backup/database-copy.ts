import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Sql, TransactionSql } from 'postgres';
import type { Part, TableEntry } from './container.ts';
import { BackupError } from './errors.ts';

// The database side of a backup (OPS-4), read and written with COPY by the
// admin connection (the embedded superuser, or DATABASE_URL's user).
//
// Why not pg_dump: the embedded PostgreSQL package ships only initdb, pg_ctl
// and postgres, and a pg_dump older than the server refuses to run (Debian
// 12 has 15; the embedded server is 18). The schema is Enclave's own, made by
// its migrations, so a backup needs only the rows: it records which
// migrations were applied, and a restore runs the same migrations on the
// empty database and copies the rows back into the tables they made.
//
// Consistency: every table is read in one REPEATABLE READ, READ ONLY
// transaction, so the backup is one snapshot of the whole database while
// servers keep running.

export const SCHEMAS = ['enclave', 'graphile_worker'] as const;
const TABLE_PART = 'database/';

export interface DatabaseSnapshot {
  readonly server: string;
  readonly migrations: { readonly version: number; readonly checksum: string }[];
  readonly tables: TableEntry[];
  readonly sequences: Record<string, string | null>;
  readonly parts: Part[];
}

interface TableRow {
  readonly name: string;
  readonly columns: string[];
}

/** Every ordinary table of Enclave's schemas (partitions included, partitioned parents not: their rows are in the partitions). */
async function listTables(sql: Sql | TransactionSql): Promise<TableRow[]> {
  return sql<TableRow[]>`
    select format('%I.%I', n.nspname, c.relname) as name,
           array_agg(a.attname::text order by a.attnum) as columns
    from pg_class c
    join pg_namespace n on n.oid = c.relnamespace
    join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped and a.attgenerated = ''
    where n.nspname in ${sql(SCHEMAS)} and c.relkind = 'r'
    group by n.nspname, c.relname
    order by 1`;
}

/** Whether the admin connection reads and writes past row-level security, as a backup and a restore must. */
export async function assertBypassesRls(sql: Sql): Promise<void> {
  const [role] = await sql<{ bypass: boolean }[]>`
    select rolsuper or rolbypassrls as bypass from pg_roles where rolname = current_user`;
  if (role?.bypass !== true) {
    throw new BackupError(
      'backup_privilege_missing',
      'the DATABASE_URL user must be a superuser (or have BYPASSRLS and own the tables) to back up or restore every tenant',
    );
  }
}

function columnList(columns: readonly string[]): string {
  return columns.map((column) => `"${column.replaceAll('"', '""')}"`).join(', ');
}

async function copyOut(tx: TransactionSql, table: TableRow): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const source = await tx.unsafe(`copy ${table.name} (${columnList(table.columns)}) to stdout`).readable();
  await pipeline(
    source,
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        chunks.push(chunk);
        done();
      },
    }),
  );
  return Buffer.concat(chunks);
}

/** Reads every table in one snapshot; `during` runs inside it, with every tenant's archive lock held shared. */
export async function snapshotDatabase<T>(
  admin: Sql,
  during: () => Promise<T>,
): Promise<{ snapshot: DatabaseSnapshot; files: T }> {
  await assertBypassesRls(admin);
  return admin.begin('isolation level repeatable read read only', async (tx) => {
    // The lock bundle-export.ts and the retention job take per tenant.
    await tx`
      select pg_advisory_xact_lock_shared(hashtext('enclave.audit_archive'), hashtext(id::text))
      from enclave.tenants order by id`;
    const [server] = await tx<
      { version: string }[]
    >`select 'PostgreSQL ' || current_setting('server_version') as version`;
    const migrations = await tx<{ version: number; checksum: string }[]>`
      select version, checksum from enclave.schema_migrations order by version`;
    const tables: TableEntry[] = [];
    const parts: Part[] = [];
    for (const table of await listTables(tx)) {
      const data = await copyOut(tx, table);
      const [counted] = await tx.unsafe<{ rows: string }[]>(
        `select count(*)::text as rows from ${table.name}`,
      );
      tables.push({ name: table.name, columns: table.columns, rows: Number(counted?.rows ?? 0) });
      parts.push({ name: `${TABLE_PART}${table.name}`, data });
    }
    const sequences: Record<string, string | null> = {};
    for (const row of await tx<{ name: string; value: string | null }[]>`
      select format('%I.%I', schemaname, sequencename) as name, last_value::text as value
      from pg_sequences where schemaname in ${tx(SCHEMAS)} order by 1`) {
      sequences[row.name] = row.value;
    }
    const files = await during();
    return {
      snapshot: {
        server: server?.version ?? 'PostgreSQL',
        migrations: [...migrations],
        tables,
        sequences,
        parts,
      },
      files,
    };
  });
}

/** The schemas' relations in `sql`'s database: a restore target must have none. */
export async function userRelations(sql: Sql): Promise<number> {
  const [row] = await sql<{ count: string }[]>`
    select count(*)::text as count from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
      and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\\_toast%'
      and n.nspname not like 'pg\\_temp%'`;
  return Number(row?.count ?? 0);
}

/**
 * Copies the backup's rows into a database freshly migrated to the same
 * schema, in one transaction: every table is emptied of what the migrations
 * seeded and refilled, sequences are set, or nothing is. Triggers (the audit
 * log's append-only guards among them) are off for this transaction only.
 */
export async function loadDatabase(
  admin: Sql,
  tables: readonly TableEntry[],
  sequences: Readonly<Record<string, string | null>>,
  parts: ReadonlyMap<string, Buffer>,
): Promise<void> {
  await assertBypassesRls(admin);
  await admin.begin(async (tx) => {
    await tx`set local session_replication_role = replica`;
    const present = new Map((await listTables(tx)).map((table) => [table.name, table.columns]));
    for (const table of tables) {
      const columns = present.get(table.name);
      if (columns === undefined || columns.join(',') !== table.columns.join(',')) {
        throw new BackupError(
          'backup_incompatible',
          `table ${table.name} in the backup does not match this Enclave's schema; restore with the Enclave version that made the backup`,
        );
      }
    }
    const names = tables.map((table) => table.name);
    if (names.length > 0) await tx.unsafe(`truncate ${names.join(', ')}`);
    for (const table of tables) {
      const data = parts.get(`${TABLE_PART}${table.name}`) ?? Buffer.alloc(0);
      if (data.length === 0) continue;
      const sink = await tx.unsafe(`copy ${table.name} (${columnList(table.columns)}) from stdin`).writable();
      await pipeline([data], sink);
    }
    for (const [name, value] of Object.entries(sequences)) {
      if (value !== null) await tx`select setval(${name}::regclass, ${value}::bigint, true)`;
    }
  });
}
