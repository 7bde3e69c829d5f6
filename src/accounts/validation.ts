import { normalizeEmail } from '../config.ts';
import { MAX_PASSWORD_BYTES } from './passwords.ts';

// Field rules shared by signup, profile and recovery. Each returns a message
// naming what is wrong, never echoing the value (it may be a password).

export const USERNAME = /^[a-z0-9_-]{3,32}$/;
export const MIN_PASSWORD_CHARS = 12;

export function normalizeUsername(value: string): string | undefined {
  const username = value.trim().toLowerCase();
  return USERNAME.test(username) ? username : undefined;
}

export { normalizeEmail };

export function passwordProblem(password: string): string | undefined {
  if ([...password].length < MIN_PASSWORD_CHARS) return `must be at least ${MIN_PASSWORD_CHARS} characters`;
  if (Buffer.byteLength(password, 'utf8') > MAX_PASSWORD_BYTES)
    return `must be at most ${MAX_PASSWORD_BYTES} bytes`;
  return undefined;
}
