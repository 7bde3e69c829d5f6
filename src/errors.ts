// One error type for the whole server. `code` is a stable string that the
// HTTP layer maps to a status and a problem type (see http/problem-types.ts);
// the message is for operators and is never shown to a client on a 5xx.
export class AppError<Code extends string = string> extends Error {
  readonly code: Code;
  /** The input field at fault, when there is one (shown beside it on a form, in `errors` on the API). */
  readonly field: string | undefined;

  constructor(code: Code, message: string, options?: { cause?: unknown; field?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AppError';
    this.code = code;
    this.field = options?.field;
  }
}

export function isAppError(error: unknown): error is AppError {
  return error instanceof AppError;
}
