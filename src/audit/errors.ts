// The one error type of the pure audit code (canonical JSON, event hashing,
// chain verification, Merkle proofs, signed notes). It imports nothing from
// outside src/audit so the offline verifier can ship these files alone; the
// server maps it to its own AppError where it needs an HTTP status.

export type AuditErrorCode =
  // JCS (RFC 8785)
  | 'jcs_unrepresentable' // a value JCS cannot encode: NaN, ±Infinity, BigInt, undefined, a function, a Date, …
  | 'jcs_not_canonical' // JSON text that is not the canonical form of its own value
  // audit events and the per-tenant chain
  | 'event_invalid' // a field of an event has the wrong type or shape
  | 'chain_record_invalid' // a stored record cannot be read (bad JSON, bad hash encoding, bad fields)
  | 'chain_not_canonical' // the hashed text is not exactly the JCS form of what it parses to
  | 'chain_tenant_mismatch' // an event of another tenant inside this tenant's chain
  | 'chain_seq_gap' // seq is not the previous seq + 1 (deleted, reordered or inserted events)
  | 'chain_hash_mismatch' // hash ≠ SHA-256(prev_hash ‖ canonical)
  // RFC 9162 Merkle trees
  | 'merkle_size_invalid' // sizes or indices outside 0 ≤ x < 2^64, index ≥ size, size1 > size2, size1 = 0
  | 'merkle_hash_length' // a leaf hash, root or proof element that is not 32 bytes
  | 'merkle_proof_length' // a proof with too few or too many elements for the tree sizes
  | 'merkle_root_mismatch' // the proof leads to a different root
  // C2SP signed notes and checkpoints
  | 'note_malformed' // not a signed note: framing, control characters, signature line syntax, size
  | 'note_key_invalid' // a verifier key string or signing key that is not a valid Ed25519 note key
  | 'note_unverified' // no signature line from the trusted key
  | 'note_signature_invalid' // a signature line from the trusted key that does not verify
  | 'checkpoint_malformed'; // a note body that is not origin / tree size / root hash / extensions

export class AuditError<Code extends AuditErrorCode = AuditErrorCode> extends Error {
  readonly code: Code;

  constructor(code: Code, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AuditError';
    this.code = code;
  }
}

export function isAuditError(error: unknown): error is AuditError {
  return error instanceof AuditError;
}
