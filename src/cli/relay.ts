import type { Sql } from 'postgres';
import { HANDLE_PATTERN } from '../agents/handles.ts';
import type { Env } from '../config.ts';
import { isAppError } from '../errors.ts';
import type { Io } from './main.ts';
import { shown, UsageError } from './usage-error.ts';

// `enclave relay listings|approve|reject`: the operator's directory listing
// review (RLY-1) from the console. Whoever runs it holds the database's
// credentials, so is the operator, as for `enclave invite`; decisions are
// recorded on the agent's tenant's chain with the actor `operator:cli`.
// Reads go through the SECURITY DEFINER queue, writes through serviceQuery
// (src/relay/listings.ts, 0020_relay_listings.sql).

const CONSOLE_ACTOR = 'operator:cli';
const HANDLE = new RegExp(HANDLE_PATTERN);
const MAX_REASON = 500;

export interface RelayArgs {
  readonly rest: readonly string[];
  readonly reason: string | undefined;
}

export type RelayCommand =
  | { readonly action: 'listings' }
  | { readonly action: 'approve'; readonly handle: string }
  | { readonly action: 'reject'; readonly handle: string; readonly reason: string | undefined };

/** Checks the whole command line before anything touches the database. */
export function parseRelayCommand(args: RelayArgs): RelayCommand {
  const [action, ...extra] = args.rest;
  if (action === undefined) throw new UsageError('"relay" needs an action: listings, approve or reject');
  if (action !== 'listings' && action !== 'approve' && action !== 'reject') {
    throw new UsageError(`unknown relay action ${shown(action)} (use listings, approve or reject)`);
  }
  if (args.reason !== undefined && action !== 'reject') {
    throw new UsageError(`--reason is an option of "relay reject", not "relay ${action}"`);
  }
  if (action === 'listings') {
    if (extra.length > 0)
      throw new UsageError(`"relay listings" takes no arguments (got ${shown(extra[0])})`);
    return { action };
  }
  const [handle, more] = extra;
  if (handle === undefined)
    throw new UsageError(`"relay ${action}" needs the agent's HANDLE (see "enclave relay listings")`);
  if (more !== undefined)
    throw new UsageError(`"relay ${action}" takes one HANDLE (got also ${shown(more)})`);
  if (!HANDLE.test(handle)) throw new UsageError(`${shown(handle)} is not an agent handle`);
  if (action === 'approve') return { action, handle };
  const reason = args.reason?.trim();
  if (reason !== undefined && (reason === '' || reason.length > MAX_REASON || /\p{Cc}/u.test(reason))) {
    throw new UsageError(`--reason must be 1 to ${MAX_REASON} characters on one line`);
  }
  return { action, handle, reason };
}

/** Runs a parsed command on `sql` (the app role's pool); the exit status. */
export async function executeRelayCommand(sql: Sql, command: RelayCommand, io: Io): Promise<number> {
  const { decideListing, listingQueue } = await import('../relay/listings.ts');
  if (command.action === 'listings') {
    const queue = await listingQueue(sql);
    if (queue.length === 0) {
      io.out('No listings wait for review.');
      return 0;
    }
    io.out(['handle', 'name', 'description', 'requested at', 'review'].join('\t'));
    for (const listing of queue) {
      // Owner-written text, shown on one line: a newline or tab in it must not forge a row.
      const oneLine = (text: string) => text.replace(/\p{Cc}+/gu, ' ');
      io.out(
        [
          listing.handle,
          oneLine(listing.name),
          oneLine(listing.description),
          listing.requested_at.toISOString(),
          listing.review,
        ].join('\t'),
      );
    }
    return 0;
  }
  try {
    await decideListing(sql, {
      handle: command.handle,
      decision: command.action,
      reason: command.action === 'reject' ? command.reason : undefined,
      actor: CONSOLE_ACTOR,
    });
  } catch (error) {
    if (!isAppError(error) || error.code !== 'not_found') throw error;
    io.err(`enclave: no listing of ${command.handle} awaits review (see "enclave relay listings")`);
    return 1;
  }
  io.out(
    command.action === 'approve'
      ? `Approved: ${command.handle} is in the directory.`
      : `Rejected the listing of ${command.handle}.`,
  );
  return 0;
}

export async function runRelay(args: RelayArgs, env: Env, io: Io): Promise<number> {
  const command = parseRelayCommand(args);
  const [{ loadConfig }, { openDatabase }] = await Promise.all([
    import('../config.ts'),
    import('../db/database.ts'),
  ]);
  const db = await openDatabase(loadConfig(env, process.cwd()), env, { appPoolSize: 1 });
  try {
    return await executeRelayCommand(db.app, command, io);
  } finally {
    await db.close();
  }
}
