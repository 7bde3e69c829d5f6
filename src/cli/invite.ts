import {
  createInvite,
  DEFAULT_INVITE_DAYS,
  inviteLink,
  listInvites,
  revokeInvite,
} from '../accounts/invites.ts';
import { PLATFORM_TENANT } from '../audit/append.ts';
import { type Env, loadConfig, normalizeEmail } from '../config.ts';
import { openDatabase } from '../db/database.ts';
import { isUuid } from '../db/tenant.ts';
import type { Io } from './main.ts';
import { shown, UsageError } from './usage-error.ts';

// `enclave invite create|list|revoke`: signup invites issued from the
// console, for operators who have no dashboard session yet (or none at all).
// Each opens the same database `npm start` uses, like `enclave migrate`.
// Creating and revoking are recorded in the platform's audit chain with the
// actor `operator:cli` (AUD-1).

const MINUTE_MS = 60_000;
const MIN_EXPIRY_MS = MINUTE_MS;
const MAX_EXPIRY_MS = 90 * 24 * 60 * MINUTE_MS;
const UNIT_MS: Readonly<Record<string, number>> = { m: MINUTE_MS, h: 60 * MINUTE_MS, d: 24 * 60 * MINUTE_MS };
/** The platform tenant has no member invites, so this scope sees signup and operator invites only. */
const CONSOLE_SCOPE = { operator: true, tenantId: PLATFORM_TENANT } as const;
const CONSOLE_ACTOR = 'operator:cli';

/** "7d", "12h", "30m" → milliseconds, within 1 minute to 90 days. The text is the operator's own input. */
export function parseExpiry(text: string): number {
  const match = /^(\d{1,6})([mhd])$/.exec(text.trim());
  const ms = match === null ? Number.NaN : Number(match[1]) * (UNIT_MS[match[2] ?? ''] ?? Number.NaN);
  if (!(ms >= MIN_EXPIRY_MS && ms <= MAX_EXPIRY_MS)) {
    throw new UsageError(
      `--expires must be a number of days, hours or minutes (like 7d, 12h or 30m) from 1m to 90d (got ${shown(text)})`,
    );
  }
  return ms;
}

export interface InviteArgs {
  readonly rest: readonly string[];
  readonly email: string | undefined;
  readonly expires: string | undefined;
}

type InviteCommand =
  | { readonly action: 'create'; readonly email: string; readonly expiresMs: number }
  | { readonly action: 'list' }
  | { readonly action: 'revoke'; readonly id: string };

/** Checks the whole command line before anything touches the database. */
export function parseInviteCommand(args: InviteArgs): InviteCommand {
  const [action, ...extra] = args.rest;
  if (action === undefined) throw new UsageError('"invite" needs an action: create, list or revoke');
  const noOptions = (): void => {
    if (args.email !== undefined || args.expires !== undefined) {
      throw new UsageError(`--email and --expires are options of "invite create", not "invite ${action}"`);
    }
  };
  switch (action) {
    case 'create': {
      if (extra.length > 0)
        throw new UsageError(`"invite create" takes no arguments (got ${shown(extra[0])})`);
      if (args.email === undefined) throw new UsageError('"invite create" needs --email ADDRESS');
      const email = normalizeEmail(args.email);
      if (email === undefined)
        throw new UsageError(`--email is not an email address (got ${shown(args.email)})`);
      const expiresMs = parseExpiry(args.expires ?? `${DEFAULT_INVITE_DAYS}d`);
      return { action, email, expiresMs };
    }
    case 'list':
      noOptions();
      if (extra.length > 0) throw new UsageError(`"invite list" takes no arguments (got ${shown(extra[0])})`);
      return { action };
    case 'revoke': {
      noOptions();
      const [id, more] = extra;
      if (id === undefined)
        throw new UsageError('"invite revoke" needs the invite ID (see "enclave invite list")');
      if (more !== undefined) throw new UsageError(`"invite revoke" takes one ID (got also ${shown(more)})`);
      if (!isUuid(id))
        throw new UsageError(`${shown(id)} is not an invite ID (a uuid, as "enclave invite list" shows)`);
      return { action, id: id.toLowerCase() };
    }
    default:
      throw new UsageError(`unknown invite action ${shown(action)} (use create, list or revoke)`);
  }
}

function describeExpiry(expiresAt: Date, now: number): string {
  const minutes = Math.round((expiresAt.getTime() - now) / MINUTE_MS);
  const span =
    minutes % 1440 === 0 ? `${minutes / 1440}d` : minutes % 60 === 0 ? `${minutes / 60}h` : `${minutes}m`;
  return `${expiresAt.toISOString()} (in ${span})`;
}

export async function runInvite(args: InviteArgs, env: Env, io: Io): Promise<number> {
  const command = parseInviteCommand(args);
  const config = loadConfig(env, process.cwd());
  const db = await openDatabase(config, env, { appPoolSize: 1 });
  try {
    switch (command.action) {
      case 'create': {
        const now = Date.now();
        const { invite, token } = await createInvite(
          db.app,
          {
            kind: 'tenant',
            email: command.email,
            tenantId: null,
            createdBy: null,
            expiresAt: new Date(now + command.expiresMs),
          },
          CONSOLE_ACTOR,
        );
        io.out(
          `Signup invite for ${command.email} (one use, expires ${describeExpiry(invite.expires_at, now)}):`,
        );
        io.out(`  ${inviteLink(config.publicUrl, token)}`);
        return 0;
      }
      case 'list': {
        const pending = (await listInvites(db.app, CONSOLE_SCOPE)).filter((i) => i.state === 'pending');
        if (pending.length === 0) {
          io.out('No pending invites.');
          return 0;
        }
        const width = Math.max(5, ...pending.map((i) => (i.email ?? '(any address)').length));
        io.out(`${'id'.padEnd(36)}  ${'kind'.padEnd(8)}  ${'email'.padEnd(width)}  expires`);
        for (const invite of pending) {
          io.out(
            `${invite.id}  ${invite.kind.padEnd(8)}  ${(invite.email ?? '(any address)').padEnd(width)}  ${invite.expires_at.toISOString()}`,
          );
        }
        return 0;
      }
      case 'revoke': {
        if (!(await revokeInvite(db.app, CONSOLE_SCOPE, command.id, CONSOLE_ACTOR))) {
          io.err(`enclave: no pending signup invite with id ${command.id} (see "enclave invite list")`);
          return 1;
        }
        io.out(`Revoked invite ${command.id}.`);
        return 0;
      }
    }
  } finally {
    await db.close();
  }
}
