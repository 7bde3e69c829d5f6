import { AppError } from '../errors.ts';

// Codes the passkeys capability raises. Each is in src/http/problem-types.ts.
export type PasskeyErrorCode =
  | 'not_found'
  | 'passkey_challenge_invalid'
  | 'passkey_rejected'
  | 'passkey_exists';

export class PasskeyError extends AppError<PasskeyErrorCode> {
  constructor(code: PasskeyErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
