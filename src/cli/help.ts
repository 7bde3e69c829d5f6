import { DEFAULT_INVITE_DAYS } from '../accounts/invite-defaults.ts';

// Every help text of the `enclave` command, in a module that loads nothing
// else: `enclave --help` and argument errors answer without loading the
// command modules (the database, the runtime), which takes seconds.

const INVITE_HELP = `Usage: enclave invite create --email ADDRESS [--expires 7d]
       enclave invite list
       enclave invite revoke ID

create  Prints a one-time signup link for ADDRESS: whoever signs up with it
        gets a new tenant of their own. Single use, bound to ADDRESS, and
        valid for --expires (Nd, Nh or Nm; 1m to 90d; default ${DEFAULT_INVITE_DAYS}d).
list    Lists pending signup and operator invites: id, email, expiry.
revoke  Revokes a pending signup or operator invite by id.`;

const AUDIT_HELP = `Usage: enclave audit checkpoint
       enclave audit export --tenant TENANT --bundle FILE [--consistency-from SIZE,...]

checkpoint  Appends a leaf for every tenant whose audit chain moved, signs a
            checkpoint and publishes it (the worker does this on its schedule).
export      Writes TENANT's recovery bundle to FILE: its audit events, archive
            segments, the latest checkpoint with the tenant's inclusion proof,
            consistency proofs from the previous checkpoint and from each
            --consistency-from size, and the checkpoint verifier key. Check it
            anywhere with: enclave-verify FILE
            The export is recorded in the tenant's own audit log.`;

const KEYS_HELP = `Usage: enclave keys rotate-master
       enclave keys rotate-tenant TENANT

rotate-master  Adds a master-key version (to the key file; with
               ENCLAVE_MASTER_KEY, add "<version>:<base64 key>" there on every
               server and here first), re-wraps every tenant's data keys under
               it, then retires the versions nothing uses any more.
rotate-tenant  Makes a new data key for TENANT (a tenant id) and re-encrypts
               that tenant's credentials under it, in one transaction.

Servers keep serving during both. See src/vault/README.md for the invariants.`;

const SUPPORT_HELP = `Usage: enclave support ssh AGENT [-- COMMAND ...]
       enclave support proxy AGENT

ssh    Opens a shell (or runs COMMAND) inside the agent's sandbox, signed in
       with the operator's support key (ENCLAVE_SUPPORT_SSH_KEY_FILE).
proxy  Connects standard input and output to the agent's SSH server, for
       OpenSSH's ProxyCommand:
         ssh -i KEYFILE -o ProxyCommand='enclave support proxy AGENT' support@AGENT

AGENT is the agent's handle or id. Only an agent whose owner allows support
access and whose instance is running accepts a session; each session's start,
end and length are recorded in the owner's audit log.`;

const RELAY_HELP = `Usage: enclave relay listings
       enclave relay approve HANDLE
       enclave relay reject HANDLE [--reason TEXT]

listings  Lists the directory listings waiting for review, oldest first:
          handle, name, description, requested at, and "new" or "changed"
          (approved before, but the card's name, description or template
          changed since).
approve   Lists the agent HANDLE in the directory (/directory).
reject    Refuses the listing; the owner sees TEXT (up to 500 characters)
          on the agent's page.

Each decision is recorded in the agent's tenant's audit log.`;

const BACKUP_HELP = `Usage: enclave backup FILE [--passphrase-file PASSFILE]

Writes one file holding a consistent snapshot of the database (every table,
read in one transaction while servers keep running), the published
checkpoints and the audit archive, with a manifest of row counts and SHA-256
digests. With --passphrase-file, the file is encrypted (scrypt, AES-256-GCM)
under the passphrase on PASSFILE's first line. The master key is never in
it: keep ENCLAVE_MASTER_KEY (or its file) apart; a restore needs the same key.
FILE must not exist.`;

const RESTORE_HELP = `Usage: enclave restore FILE [--passphrase-file PASSFILE]

Restores a backup into this configuration's database and directories, which
must be empty (a new ENCLAVE_DATA_DIR, or an empty DATABASE_URL database and
empty ENCLAVE_CHECKPOINT_DIR and ENCLAVE_AUDIT_ARCHIVE_DIR). The whole file is
checked first: a truncated or altered file, or a wrong passphrase, is refused
before anything changes, and a restore that fails part-way is undone.`;

const DRILL_HELP = `Usage: enclave drill

Backs up this instance, restores the backup into a scratch database on the
same server and scratch directories, then checks the copy: migrations
current, row counts as backed up, every tenant's audit chain verified with
the offline verifier against the latest checkpoint, every credential
decrypted with the configured master key. Prints one line per check, records
the outcome for the posture page, removes the scratch copy, and exits 1 if
any check failed.`;

export const USAGE = `Usage: enclave <command> [options]

Commands:
  start     Start the server and the job worker (migrates first)
  worker    Start only the job worker, for scale-out (migrates first)
  migrate   Apply pending database migrations and exit
  doctor    Check configuration, database, migrations and host tools
  invite    Create, list or revoke signup invites (invite create --email ADDRESS)
  audit     Make an audit checkpoint now, or export a tenant's recovery bundle
  keys      Rotate the vault's master key or a tenant's data key
  support   Open a support shell in an agent that allows it (ssh, or proxy for OpenSSH)
  relay     Review directory listings (relay listings, approve HANDLE, reject HANDLE)
  backup    Write a backup of the database, checkpoints and audit archive to FILE
  restore   Restore a backup FILE into an empty database and directories
  drill     Back up, restore into a scratch copy, check it, and report
  help      Show this help

Run "enclave <command> --help" for a command's options.
Configuration comes from ENCLAVE_* environment variables; see README.md.`;

export const COMMAND_HELP: Readonly<Record<string, string>> = {
  start: `Usage: enclave start

Starts the HTTP server and the job worker. With DATABASE_URL unset, an
embedded PostgreSQL runs under ENCLAVE_DATA_DIR. Migrations run first.
Stops cleanly on SIGINT or SIGTERM.`,
  worker: `Usage: enclave worker

Starts only the job worker (graphile-worker), to run more workers beside
the servers. Migrations run first. Stops cleanly on SIGINT or SIGTERM.`,
  migrate: `Usage: enclave migrate

Applies pending migrations (src/db/migrations) and the job queue's schema,
prints what it applied, and exits. Safe to run while servers are running.`,
  doctor: `Usage: enclave doctor

Checks the configuration, the database connection, pending migrations, the
database roles, row-level security coverage, the worker's heartbeat, that
the master key opens this database's data keys, and whether bubblewrap and
Chromium are installed. Prints a fix for each problem
and exits non-zero if anything Enclave needs to run is broken.`,
  invite: INVITE_HELP,
  audit: AUDIT_HELP,
  keys: KEYS_HELP,
  support: SUPPORT_HELP,
  relay: RELAY_HELP,
  backup: BACKUP_HELP,
  restore: RESTORE_HELP,
  drill: DRILL_HELP,
  help: 'Usage: enclave help [command]',
};
