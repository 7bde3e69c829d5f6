import { createPublicKey, type KeyObject } from 'node:crypto';
import type { NoteSigner } from './note.ts';
import { verifierKeyString } from './note.ts';

// What signs the checkpoints (AUD-4): the log's origin, the note signer and
// the verifier key string tenants pin, all derived from the operator's
// Ed25519 checkpoint key. Loading that key is an operator secret's job
// (src/operator-secrets/checkpoint-key.ts); this file only uses it.

export interface AuditSigning {
  /** The checkpoint log's origin line, also the key's name: `<public host>/enclave/audit`. */
  readonly origin: string;
  readonly signer: NoteSigner;
  /** `<name>+<key ID>+<base64 key>`, served at /.well-known/enclave-checkpoint-key. */
  readonly verifierKey: string;
}

export function auditOrigin(publicUrl: string): string {
  return `${new URL(publicUrl).host}/enclave/audit`;
}

export function auditSigning(publicUrl: string, privateKey: KeyObject): AuditSigning {
  const origin = auditOrigin(publicUrl);
  return {
    origin,
    signer: { name: origin, privateKey },
    verifierKey: verifierKeyString(origin, createPublicKey(privateKey)),
  };
}
