import type { KeyObject } from 'node:crypto';
import type { Config, Env } from '../config.ts';
import { loadEd25519Key } from './ed25519-key.ts';

// The operator's relay card-signing key (RLY-13): Ed25519, as a PKCS#8 PEM
// file, loaded exactly as the checkpoint key is. It signs every served A2A
// agent card; its public half is at /.well-known/jwks.json. What signs with
// it is relay code, in src/relay/card-signing.ts.

export const RELAY_SIGNING_KEY_VARIABLE = 'ENCLAVE_RELAY_SIGNING_KEY_FILE';

export function loadRelaySigningKey(config: Pick<Config, 'env' | 'dataDir'>, env: Env): Promise<KeyObject> {
  return loadEd25519Key(config, env, {
    variable: RELAY_SIGNING_KEY_VARIABLE,
    generatedName: 'relay_signing_key.pem',
  });
}
