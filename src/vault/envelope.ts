import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { VaultError } from './errors.ts';

// Envelope encryption, pure: AES-256-GCM with a fresh 96-bit nonce per
// encryption and associated data that names where a ciphertext belongs.
// A ciphertext moved to another tenant, agent, name or key version fails
// its tag check instead of decrypting (VLT-1).

export const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
/** nonce ‖ ciphertext ‖ tag of one wrapped 32-byte key. */
export const WRAPPED_KEY_BYTES = NONCE_BYTES + KEY_BYTES + TAG_BYTES;

export interface Sealed {
  readonly ciphertext: Buffer;
  readonly nonce: Buffer;
  readonly tag: Buffer;
}

export function seal(key: Buffer, plaintext: Buffer, aad: Buffer): Sealed {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  const head = cipher.update(plaintext);
  const tail = cipher.final();
  const ciphertext = tail.length === 0 ? head : Buffer.concat([head, tail]);
  return { ciphertext, nonce, tag: cipher.getAuthTag() };
}

/** The plaintext, in a Buffer the caller must zero. Throws `ciphertext_rejected` on any mismatch. */
export function open(key: Buffer, sealed: Sealed, aad: Buffer): Buffer {
  // Attacker model: whoever can write the database controls all three parts; GCM's tag check is the defence.
  if (sealed.nonce.length !== NONCE_BYTES || sealed.tag.length !== TAG_BYTES) {
    throw new VaultError('ciphertext_rejected', 'nonce or tag has the wrong length');
  }
  const decipher = createDecipheriv('aes-256-gcm', key, sealed.nonce, { authTagLength: TAG_BYTES });
  decipher.setAAD(aad);
  decipher.setAuthTag(sealed.tag);
  const head = decipher.update(sealed.ciphertext);
  try {
    const tail = decipher.final();
    if (tail.length === 0) return head;
    const whole = Buffer.concat([head, tail]);
    head.fill(0);
    tail.fill(0);
    return whole;
  } catch (cause) {
    head.fill(0);
    throw new VaultError('ciphertext_rejected', 'authentication tag does not match', { cause });
  }
}

/** Wraps a 32-byte key as one buffer: nonce ‖ ciphertext ‖ tag. */
export function wrapKey(kek: Buffer, key: Buffer, aad: Buffer): Buffer {
  const sealed = seal(kek, key, aad);
  return Buffer.concat([sealed.nonce, sealed.ciphertext, sealed.tag]);
}

export function unwrapKey(kek: Buffer, wrapped: Buffer, aad: Buffer): Buffer {
  if (wrapped.length !== WRAPPED_KEY_BYTES) {
    throw new VaultError('ciphertext_rejected', `a wrapped key is ${WRAPPED_KEY_BYTES} bytes`);
  }
  return open(
    kek,
    {
      nonce: wrapped.subarray(0, NONCE_BYTES),
      ciphertext: wrapped.subarray(NONCE_BYTES, NONCE_BYTES + KEY_BYTES),
      tag: wrapped.subarray(NONCE_BYTES + KEY_BYTES),
    },
    aad,
  );
}

// Associated data: a domain label and the fields, NUL-separated. No field can
// hold a NUL (uuids, integers, names matching ^[a-z][a-z0-9_]*$), so the
// encoding is unambiguous.
function associatedData(label: string, fields: readonly (string | number)[]): Buffer {
  return Buffer.from([label, ...fields.map(String)].join('\0'), 'utf8');
}

/** AAD of a tenant data key wrapped under a master key: tenant id + data-key version. */
export function dataKeyAad(tenantId: string, dataKeyVersion: number): Buffer {
  return associatedData('enclave.vault.data-key.v1', [tenantId, dataKeyVersion]);
}

/** AAD of the canary stored per master-key version. */
export function canaryAad(masterVersion: number): Buffer {
  return associatedData('enclave.vault.master-canary.v1', [masterVersion]);
}

export interface CredentialAddress {
  readonly tenantId: string;
  readonly agentId: string;
  readonly name: string;
}

/** AAD of a credential: tenant, agent (its owner), name and the data-key version that sealed it. */
export function credentialAad(address: CredentialAddress, dataKeyVersion: number): Buffer {
  return associatedData('enclave.vault.credential.v1', [
    address.tenantId,
    address.agentId,
    address.name,
    dataKeyVersion,
  ]);
}

export interface TotpSecretAddress {
  readonly tenantId: string;
  readonly userId: string;
  /** The factor's id (chosen at enrolment, before the factor row exists). */
  readonly factorId: string;
}

/**
 * AAD of a TOTP secret: a purpose of its own, then tenant, user, factor and
 * data-key version. Sealed under the same data keys as credentials, a TOTP
 * secret never opens as a credential, nor a credential as a TOTP secret.
 */
export function totpSecretAad(address: TotpSecretAddress, dataKeyVersion: number): Buffer {
  return associatedData('enclave.vault.totp-secret.v1', [
    address.tenantId,
    address.userId,
    address.factorId,
    dataKeyVersion,
  ]);
}
