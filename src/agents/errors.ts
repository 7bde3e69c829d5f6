import { AppError } from '../errors.ts';

// Codes the agents capability raises; each maps to a problem type in
// src/http/problem-types.ts. Messages name the field and the rule, never a
// submitted credential value.
export type AgentsErrorCode = 'validation_failed' | 'not_found' | 'handle_taken' | 'template_unavailable';

export class AgentsError extends AppError<AgentsErrorCode> {
  constructor(code: AgentsErrorCode, message: string, field?: string) {
    super(code, message, field === undefined ? undefined : { field });
    this.name = 'AgentsError';
  }
}

export function agentFieldError(field: string, message: string): AgentsError {
  return new AgentsError('validation_failed', message, field);
}
