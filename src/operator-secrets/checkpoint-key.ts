import type { KeyObject } from 'node:crypto';
import type { Config, Env } from '../config.ts';
import { loadEd25519Key } from './ed25519-key.ts';

// The operator's checkpoint signing key (AUD-4): Ed25519, as a PKCS#8 PEM
// file. In production it comes from ENCLAVE_CHECKPOINT_KEY_FILE and has no
// default; in development it is generated once under the data dir (mode
// 0600), like the other operator secrets (secrets.ts). What signs with it —
// the checkpoint origin, signer and verifier key string — is audit code, in
// src/audit/checkpoint-signing.ts.

export const CHECKPOINT_KEY_VARIABLE = 'ENCLAVE_CHECKPOINT_KEY_FILE';

export function loadCheckpointKey(config: Pick<Config, 'env' | 'dataDir'>, env: Env): Promise<KeyObject> {
  return loadEd25519Key(config, env, {
    variable: CHECKPOINT_KEY_VARIABLE,
    generatedName: 'checkpoint_key.pem',
  });
}
