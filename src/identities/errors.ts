import { AppError } from '../errors.ts';

// Codes the identities capability raises (each in src/http/problem-types.ts).
// They are shown on the page that caused them. `reason` is a stable code for
// the audit log (the library's error code), never a message or a token.
export type IdentityErrorCode =
  | 'not_found'
  | 'identity_failed'
  | 'identity_flow_invalid'
  | 'invite_needed'
  | 'identity_in_use'
  | 'last_sign_in_method';

export class IdentityError extends AppError<IdentityErrorCode> {
  readonly reason: string | undefined;

  constructor(code: IdentityErrorCode, message: string, options?: { reason?: string }) {
    super(code, message);
    this.reason = options?.reason;
  }
}
