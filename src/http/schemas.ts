import { Type } from 'typebox';

// Schema pieces the JSON API repeats across capabilities.

export const Id = Type.String({ format: 'uuid' });
export const IdParams = Type.Object({ id: Id }, { additionalProperties: false });
/** Input: an RFC 3339 string. */
export const TimestampIn = Type.String({ format: 'date-time' });
/** Input: an expiry. "Not in the past" is beyond JSON Schema: the service refuses it, and this says so. */
export const ExpiryIn = Type.String({
  format: 'date-time',
  description: 'An RFC 3339 time in the future; a time already past is refused with 400 validation_failed',
});
/** Output: a Date from the database, serialized as an RFC 3339 string. */
export const Timestamp = Type.Unsafe<Date>({ type: 'string', format: 'date-time' });
export const NullableTimestamp = Type.Union([Timestamp, Type.Null()]);

/**
 * A curl example for an operation's page in /docs: in its description (which
 * the reference UI renders) and as x-codeSamples (which other OpenAPI tools
 * read). $ENCLAVE_URL and $ENCLAVE_TOKEN stand for the server and an API token.
 */
export function curlExample(method: string, path: string, body?: unknown) {
  const lines = [
    `curl${method === 'GET' ? '' : ` -X ${method}`} "$ENCLAVE_URL${path}"`,
    '  -H "Authorization: Bearer $ENCLAVE_TOKEN"',
    ...(body === undefined
      ? []
      : ['  -H "Content-Type: application/json"', `  -d '${JSON.stringify(body)}'`]),
  ];
  const source = lines.join(' \\\n');
  return {
    description: `Example:\n\n\`\`\`sh\n${source}\n\`\`\``,
    'x-codeSamples': [{ lang: 'Shell', label: 'curl', source }],
  };
}
