import { AppError } from '../errors.ts';

// Codes the accounts capability raises. Those with an HTTP meaning of their
// own are in src/http/problem-types.ts; the form errors (invite_invalid,
// login_failed, …) are shown on the page that caused them and reach the API
// as validation_failed.
export type AccountsErrorCode =
  | 'unauthenticated'
  | 'forbidden'
  | 'not_found'
  | 'validation_failed'
  | 'invite_invalid'
  | 'login_failed'
  | 'link_invalid'
  | 'last_owner'
  | 'reauth_required'
  | 'second_factor_required';

export class AccountsError extends AppError<AccountsErrorCode> {
  constructor(code: AccountsErrorCode, message: string, field?: string) {
    super(code, message, field === undefined ? undefined : { field });
  }
}

export function fieldError(field: string, message: string): AccountsError {
  return new AccountsError('validation_failed', message, field);
}
