import { AuditError } from './errors.ts';
import { HASH_LENGTH } from './event.ts';
import { leafHash } from './merkle.ts';

// A leaf of the checkpoint log (AUD-4) commits to one tenant's chain head.
// Its data is a fixed 57-byte binary string, so no two heads encode alike
// and no encoder has a choice to make:
//
//   leaf data = 0x01 (format version) ‖ tenant UUID (16 bytes) ‖ seq (uint64, big-endian) ‖ head hash (32 bytes)
//   leaf hash = SHA-256(0x00 ‖ leaf data)                        (RFC 6962 leaf hash)
//
// The same bytes are built in SQL by enclave.checkpoint_append_leaves()
// (0004_checkpoints.sql): '\x01' || uuid_send(tenant) || int8send(seq) || hash.

/** A tenant's chain head as a leaf of the checkpoint log commits to it. */
export interface HeadLeaf {
  /** Lowercase UUID. */
  readonly tenant: string;
  readonly seq: number;
  /** The hash of event `seq`, 32 bytes. */
  readonly hash: Uint8Array;
}

export const HEAD_LEAF_VERSION = 0x01;
export const HEAD_LEAF_LENGTH = 1 + 16 + 8 + HASH_LENGTH;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The 57 leaf data bytes. Throws AuditError `event_invalid` for a malformed head. */
export function encodeHeadLeaf(head: HeadLeaf): Buffer {
  if (typeof head.tenant !== 'string' || !UUID.test(head.tenant)) {
    throw new AuditError('event_invalid', 'leaf tenant must be a lowercase UUID');
  }
  if (!Number.isSafeInteger(head.seq) || head.seq < 1) {
    throw new AuditError('event_invalid', 'leaf seq must be a positive safe integer');
  }
  if (!(head.hash instanceof Uint8Array) || head.hash.length !== HASH_LENGTH) {
    throw new AuditError('event_invalid', 'leaf head hash must be 32 bytes');
  }
  const data = Buffer.alloc(HEAD_LEAF_LENGTH);
  data[0] = HEAD_LEAF_VERSION;
  Buffer.from(head.tenant.replaceAll('-', ''), 'hex').copy(data, 1);
  data.writeBigUInt64BE(BigInt(head.seq), 17);
  data.set(head.hash, 25);
  return data;
}

/** SHA-256(0x00 ‖ encodeHeadLeaf(head)): what the Merkle tree holds. */
export function headLeafHash(head: HeadLeaf): Buffer {
  return leafHash(encodeHeadLeaf(head));
}

/**
 * An entry of a checkpoint's head map (AUD-8): the same bytes as a leaf but
 * for the first, 0x02, so an entry can never pass for a log leaf or the
 * reverse. SQL: enclave.checkpoint_head_map() (0012_checkpoint_nodes.sql).
 */
export const HEAD_MAP_ENTRY_VERSION = 0x02;

/** SHA-256(0x00 ‖ 0x02 ‖ tenant ‖ seq ‖ hash): a head map entry's Merkle leaf hash. */
export function headMapEntryHash(head: HeadLeaf): Buffer {
  const data = encodeHeadLeaf(head);
  data[0] = HEAD_MAP_ENTRY_VERSION;
  return leafHash(data);
}

/** The note extension line that carries a checkpoint's head map: `enclave-head-map <entries> <base64 root>`. */
export const HEAD_MAP_EXTENSION = 'enclave-head-map';

export function headMapExtension(size: bigint, root: Uint8Array): string {
  return `${HEAD_MAP_EXTENSION} ${size} ${Buffer.from(root).toString('base64')}`;
}

/** The head map a checkpoint's extension lines carry, or undefined when it has none; throws on a malformed one. */
export function parseHeadMapExtension(
  extensions: readonly string[],
): { size: bigint; root: Buffer } | undefined {
  const line = extensions.find((extension) => extension.startsWith(`${HEAD_MAP_EXTENSION} `));
  if (line === undefined) return undefined;
  const match = /^enclave-head-map (0|[1-9][0-9]{0,18}) ([A-Za-z0-9+/]{43}=)$/.exec(line);
  const root = match === null ? undefined : Buffer.from(match[2] as string, 'base64');
  if (match === null || root?.length !== 32 || root.toString('base64') !== match[2]) {
    throw new AuditError(
      'checkpoint_malformed',
      'the head map extension is not "enclave-head-map <entries> <base64 root>"',
    );
  }
  return { size: BigInt(match[1] as string), root };
}
