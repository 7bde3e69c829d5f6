import { Type } from 'typebox';

// Schema pieces the JSON API repeats across capabilities.

export const Id = Type.String({ format: 'uuid' });
export const IdParams = Type.Object({ id: Id }, { additionalProperties: false });
/** Input: an RFC 3339 string. */
export const TimestampIn = Type.String({ format: 'date-time' });
/** Output: a Date from the database, serialized as an RFC 3339 string. */
export const Timestamp = Type.Unsafe<Date>({ type: 'string', format: 'date-time' });
export const NullableTimestamp = Type.Union([Timestamp, Type.Null()]);
