import pino, { type DestinationStream, type Logger } from 'pino';
import type { LogLevel } from './config.ts';

// Structured JSON logs. Redaction is a second line of defence: code logs
// tokens and sessions by id, never by value, and these paths catch the
// places a secret could still slip into a log object.
export const REDACT_PATHS = [
  'password',
  '*.password',
  'token',
  '*.token',
  'secret',
  '*.secret',
  'authorization',
  '*.authorization',
  'cookie',
  '*.cookie',
  'headers.authorization',
  'headers.cookie',
  'headers["set-cookie"]',
  'req.headers.authorization',
  'req.headers.cookie',
  'connectionString',
  '*.connectionString',
];

export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  const options = {
    level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    base: { service: 'enclave' },
  };
  return destination === undefined ? pino(options) : pino(options, destination);
}

export type { Logger };
