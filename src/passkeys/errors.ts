import { AppError } from '../errors.ts';

// Codes the passkeys capability raises. Each is in src/http/problem-types.ts.
export type PasskeyErrorCode =
  | 'not_found'
  | 'passkey_challenge_invalid'
  | 'passkey_rejected'
  | 'passkey_exists'
  | 'passkey_limit';

export class PasskeyError extends AppError<PasskeyErrorCode> {
  constructor(code: PasskeyErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** No challenge waits for this answer: it expired (5 minutes), was used, or a newer one replaced it. */
export function ceremonyExpired(): PasskeyError {
  return new PasskeyError(
    'passkey_challenge_invalid',
    'The passkey request took too long, or was started again in another tab. Try again.',
  );
}
