import { createCipheriv, createDecipheriv, hash, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import { BackupError } from './errors.ts';

// The backup file (OPS-4): one file, checked whole before anything is
// restored from it.
//
//   plain:      "ENCLAVE-BACKUP 1\n" ‖ header JSON ‖ "\n" ‖ body ‖ SHA-256(everything before)
//   encrypted:  "ENCLAVE-BACKUP 1\n" ‖ header JSON ‖ "\n" ‖ AES-256-GCM(body) ‖ tag (16 bytes)
//
// The header says which, and for an encrypted file the scrypt parameters, the
// salt, the GCM nonce and a passphrase check (so a wrong passphrase is told
// apart from an altered file); the whole header line is the GCM additional
// data, so changing it is caught too. The body frames the manifest and then
// each part in the manifest's order:
//
//   u32 manifest length ‖ manifest JSON ‖ part bytes ‖ part bytes …
//
// and the manifest carries each part's name, length and SHA-256. Truncation
// fails the trailer or the tag; any altered byte fails the trailer, the tag or
// a part's digest.

const MAGIC = Buffer.from('ENCLAVE-BACKUP 1\n', 'ascii');
const DIGEST_BYTES = 32;
const TAG_BYTES = 16;
const MAX_HEADER_BYTES = 4096;

export interface ScryptCost {
  readonly N: number;
  readonly r: number;
  readonly p: number;
}

/** scrypt cost for an operator's passphrase: N = 2^17, r = 8 (128 MiB, about half a second): a backup leaves the host, so guessing must be slow. */
export const PASSPHRASE_COST: ScryptCost = { N: 2 ** 17, r: 8, p: 1 };
/** For a random 192-bit passphrase that is never stored (the drill's): stretching it adds nothing. */
export const RANDOM_KEY_COST: ScryptCost = { N: 2 ** 10, r: 8, p: 1 };
const scryptAsync = promisify(scrypt) as (
  password: Buffer,
  salt: Buffer,
  keylen: number,
  options: { N: number; r: number; p: number; maxmem: number },
) => Promise<Buffer>;

export const BACKUP_FORMAT = 'enclave-backup';
export const BACKUP_VERSION = 1;

export interface PartEntry {
  readonly name: string;
  readonly bytes: number;
  readonly sha256: string;
}

export interface Manifest {
  readonly format: typeof BACKUP_FORMAT;
  readonly version: typeof BACKUP_VERSION;
  readonly created_at: string;
  /** The server the database was read from, e.g. "PostgreSQL 18.4". */
  readonly server: string;
  /** Enclave's migrations applied in the database, by version, with their checksums. */
  readonly migrations: readonly { readonly version: number; readonly checksum: string }[];
  /** Every table, "schema.table", with its columns in copy order and its row count at the snapshot. */
  readonly tables: readonly TableEntry[];
  /** Sequences' last values at the snapshot ("schema.sequence"); null when never used. */
  readonly sequences: Readonly<Record<string, string | null>>;
  readonly parts: readonly PartEntry[];
}

export interface TableEntry {
  readonly name: string;
  readonly columns: readonly string[];
  readonly rows: number;
}

export interface Part {
  readonly name: string;
  readonly data: Buffer;
}

interface Header {
  readonly encryption: null | {
    readonly kdf: 'scrypt';
    readonly N: number;
    readonly r: number;
    readonly p: number;
    readonly salt: string;
    readonly cipher: 'aes-256-gcm';
    readonly nonce: string;
    /** SHA-256 of the derived check key: tells a wrong passphrase from an altered body. */
    readonly check: string;
  };
}

function sha256(data: Buffer): Buffer {
  return hash('sha256', data, 'buffer');
}

/** The body: manifest (with every part's length and digest filled in) and the parts after it. */
export function packBody(manifest: Omit<Manifest, 'parts'>, parts: readonly Part[]): Buffer {
  const entries: PartEntry[] = parts.map((part) => ({
    name: part.name,
    bytes: part.data.length,
    sha256: sha256(part.data).toString('hex'),
  }));
  const json = Buffer.from(JSON.stringify({ ...manifest, parts: entries }), 'utf8');
  const length = Buffer.alloc(4);
  length.writeUInt32BE(json.length);
  return Buffer.concat([length, json, ...parts.map((part) => part.data)]);
}

function invalid(reason: string): BackupError {
  return new BackupError(
    'backup_invalid',
    `the backup file is damaged or was altered (${reason}); nothing was restored`,
  );
}

/** Reads a body back, checking every part's length and digest; throws backup_invalid on any mismatch. */
export function unpackBody(body: Buffer): { manifest: Manifest; parts: Part[] } {
  if (body.length < 4) throw invalid('no manifest');
  const length = body.readUInt32BE(0);
  if (4 + length > body.length) throw invalid('the manifest runs past the end');
  let manifest: Manifest;
  try {
    manifest = JSON.parse(body.subarray(4, 4 + length).toString('utf8')) as Manifest;
  } catch {
    throw invalid('the manifest is not JSON');
  }
  if (manifest.format !== BACKUP_FORMAT || !Array.isArray(manifest.parts)) throw invalid('no manifest');
  if (manifest.version !== BACKUP_VERSION) {
    throw new BackupError(
      'backup_incompatible',
      `backup format version ${String(manifest.version)} is not known to this Enclave`,
    );
  }
  const parts: Part[] = [];
  let offset = 4 + length;
  for (const entry of manifest.parts) {
    if (!Number.isSafeInteger(entry.bytes) || entry.bytes < 0 || offset + entry.bytes > body.length) {
      throw invalid(`part ${JSON.stringify(entry.name)} runs past the end`);
    }
    const data = body.subarray(offset, offset + entry.bytes);
    if (sha256(data).toString('hex') !== entry.sha256) {
      throw invalid(`part ${JSON.stringify(entry.name)} does not match its SHA-256`);
    }
    parts.push({ name: entry.name, data });
    offset += entry.bytes;
  }
  if (offset !== body.length) throw invalid('bytes after the last part');
  return { manifest, parts };
}

async function deriveKeys(
  passphrase: Buffer,
  salt: Buffer,
  params: { N: number; r: number; p: number },
): Promise<{ key: Buffer; check: Buffer }> {
  const derived = await scryptAsync(passphrase, salt, 64, { ...params, maxmem: 256 * params.N * params.r });
  return { key: derived.subarray(0, 32), check: sha256(derived.subarray(32)) };
}

function headerLine(header: Header): Buffer {
  return Buffer.concat([MAGIC, Buffer.from(`${JSON.stringify(header)}\n`, 'utf8')]);
}

/** The whole file: plain with a SHA-256 trailer, or sealed under a key derived from `passphrase`. */
export async function sealFile(
  body: Buffer,
  passphrase: Buffer | undefined,
  cost: ScryptCost = PASSPHRASE_COST,
): Promise<Buffer> {
  if (passphrase === undefined) {
    const head = headerLine({ encryption: null });
    return Buffer.concat([head, body, sha256(Buffer.concat([head, body]))]);
  }
  const salt = randomBytes(16);
  const nonce = randomBytes(12);
  const { key, check } = await deriveKeys(passphrase, salt, cost);
  const head = headerLine({
    encryption: {
      kdf: 'scrypt',
      N: cost.N,
      r: cost.r,
      p: cost.p,
      salt: salt.toString('base64'),
      cipher: 'aes-256-gcm',
      nonce: nonce.toString('base64'),
      check: check.toString('hex'),
    },
  });
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(head);
  const sealed = Buffer.concat([head, cipher.update(body), cipher.final(), cipher.getAuthTag()]);
  key.fill(0);
  return sealed;
}

function readHeader(file: Buffer): { header: Header; headLength: number } {
  if (!file.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new BackupError('backup_invalid', 'this is not an Enclave backup file (no ENCLAVE-BACKUP header)');
  }
  const end = file.indexOf(0x0a, MAGIC.length);
  if (end === -1 || end - MAGIC.length > MAX_HEADER_BYTES) throw invalid('the header line has no end');
  try {
    return {
      header: JSON.parse(file.subarray(MAGIC.length, end).toString('utf8')) as Header,
      headLength: end + 1,
    };
  } catch {
    throw invalid('the header is not JSON');
  }
}

/** Whether a file is encrypted, from its header alone (to ask for a passphrase before reading the rest). */
export function isEncrypted(file: Buffer): boolean {
  return readHeader(file).header.encryption !== null;
}

/** Checks the whole file and returns its body; throws before returning anything if one byte is off. */
export async function openFile(file: Buffer, passphrase: Buffer | undefined): Promise<Buffer> {
  const { header, headLength } = readHeader(file);
  const head = file.subarray(0, headLength);
  const enc = header.encryption;
  if (enc === null) {
    if (passphrase !== undefined) {
      throw new BackupError(
        'backup_passphrase_needed',
        'this backup is not encrypted, but a passphrase file was given: leave --passphrase-file out',
      );
    }
    if (file.length < headLength + DIGEST_BYTES) throw invalid('it ends before its checksum');
    const body = file.subarray(headLength, file.length - DIGEST_BYTES);
    const trailer = file.subarray(file.length - DIGEST_BYTES);
    if (!timingSafeEqual(sha256(file.subarray(0, file.length - DIGEST_BYTES)), trailer)) {
      throw invalid('its SHA-256 does not match: truncated or changed');
    }
    return body;
  }
  if (passphrase === undefined) {
    throw new BackupError(
      'backup_passphrase_needed',
      'this backup is encrypted: give its passphrase with --passphrase-file FILE',
    );
  }
  if (
    enc.kdf !== 'scrypt' ||
    enc.cipher !== 'aes-256-gcm' ||
    ![enc.N, enc.r, enc.p].every((n) => Number.isSafeInteger(n) && n > 0) ||
    enc.N > 2 ** 20 ||
    enc.r > 32 ||
    enc.p > 16
  ) {
    throw invalid('unknown encryption parameters');
  }
  const { key, check } = await deriveKeys(passphrase, Buffer.from(enc.salt, 'base64'), enc);
  try {
    const expected = Buffer.from(enc.check, 'hex');
    if (expected.length !== check.length || !timingSafeEqual(expected, check)) {
      throw new BackupError(
        'backup_passphrase_wrong',
        'the passphrase does not open this backup (wrong passphrase file?); nothing was restored',
      );
    }
    if (file.length < headLength + TAG_BYTES) throw invalid('it ends before its authentication tag');
    const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(enc.nonce, 'base64'));
    decipher.setAAD(head);
    decipher.setAuthTag(file.subarray(file.length - TAG_BYTES));
    try {
      return Buffer.concat([
        decipher.update(file.subarray(headLength, file.length - TAG_BYTES)),
        decipher.final(),
      ]);
    } catch {
      throw invalid('it does not authenticate: truncated or changed');
    }
  } finally {
    key.fill(0);
  }
}
