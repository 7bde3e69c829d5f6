import { AppError } from '../errors.ts';

// Codes the factors capability raises; each is a problem type of
// src/http/problem-types.ts. A wrong or malformed code is validation_failed
// on the field `code`: the message names the rule, never what was typed.
export type FactorsErrorCode = 'validation_failed' | 'not_found';

export class FactorsError extends AppError<FactorsErrorCode> {
  constructor(code: FactorsErrorCode, message: string, field?: string) {
    super(code, message, field === undefined ? undefined : { field });
  }
}
