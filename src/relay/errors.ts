import { AppError } from '../errors.ts';

// Codes the relay's connections raise; each maps to a problem type in
// src/http/problem-types.ts. An unknown, unpublished or own-tenant handle and
// a connection not (or no longer) approved are all `not_found`, with the
// same message, so the answer tells nobody which it was (RLY-2).
export type RelayErrorCode =
  | 'validation_failed'
  | 'not_found'
  | 'forbidden'
  | 'connection_exists'
  | 'connection_state'
  | 'relay_token_claimed'
  | 'message_too_large'
  | 'thread_state'
  | 'card_unpublished'
  | 'listing_state';

export class RelayError extends AppError<RelayErrorCode> {
  constructor(code: RelayErrorCode, message: string, field?: string) {
    super(code, message, field === undefined ? undefined : { field });
    this.name = 'RelayError';
  }
}
