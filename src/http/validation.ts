import AjvCompiler from '@fastify/ajv-compiler';
import type { FastifyServerOptions } from 'fastify';
import { isTextKind, TEXT_KIND_KEYWORD, textProblem } from './text-input.ts';

// Request schemas are validated with ajv, unknown fields rejected. Bodies are
// checked as sent, with no type coercion: {"name": 42} is not a string, and a
// client learns that rather than having 42 quietly become "42". Path
// parameters and query strings arrive as text and are coerced as usual.
//
// Two checks are added to every route's schema here, so no route can forget
// them: every string in a body is text of its kind (text-input.ts; query and
// path text is checked by a hook, also on routes without a schema), and every
// number in a path or query is finite — ajv coerces "1e400" to Infinity and
// then skips minimum and maximum, so a bound alone let it through.

type SchemaController = NonNullable<FastifyServerOptions['schemaController']>;

const FINITE_KEYWORD = 'x-finite';

interface KeywordError {
  keyword: string;
  message: string;
  params: Record<string, never>;
}

/** An ajv keyword function; it reports through its own `errors` property, as ajv asks (validation is synchronous). */
function keywordCheck<S, D>(keyword: string, problemOf: (schema: S, data: D) => string | undefined) {
  const validate = Object.assign(
    (schema: S, data: D): boolean => {
      const problem = problemOf(schema, data);
      validate.errors = problem === undefined ? [] : [{ keyword, message: problem, params: {} }];
      return problem === undefined;
    },
    { errors: [] as KeywordError[] },
  );
  return validate;
}

const KEYWORDS: NonNullable<AjvCompiler.Options['keywords']> = [
  {
    keyword: TEXT_KIND_KEYWORD,
    type: 'string',
    schemaType: 'string',
    metaSchema: { enum: ['line', 'multiline'] },
    errors: true,
    validate: keywordCheck(TEXT_KIND_KEYWORD, textProblem),
  },
  {
    // Not limited to type 'number': ajv runs number keywords only on finite numbers.
    keyword: FINITE_KEYWORD,
    schemaType: 'boolean',
    errors: true,
    validate: keywordCheck(FINITE_KEYWORD, (_on: boolean, data: unknown) =>
      typeof data === 'number' && !Number.isFinite(data) ? 'must be a finite number' : undefined,
    ),
  },
];

const COMMON = { removeAdditional: false, allErrors: true, addUsedSchema: false } as const;

// Where JSON Schema nests schemas: one schema, a list of them, or a map of name to schema.
const ONE = new Set([
  'items',
  'additionalItems',
  'additionalProperties',
  'unevaluatedProperties',
  'propertyNames',
  'contains',
  'not',
  'if',
  'then',
  'else',
]);
const LIST = new Set(['allOf', 'anyOf', 'oneOf', 'prefixItems']);
const MAP = new Set(['properties', 'patternProperties', '$defs', 'definitions', 'dependentSchemas']);

type Part = 'body' | 'text';

function mapValues(value: unknown, fn: (item: unknown) => unknown): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, fn(item)]));
}

/** A copy of `schema` with the checks above on each string (bodies) or number (paths and queries). */
function withInputChecks(schema: unknown, part: Part): unknown {
  if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) return schema;
  const nested = (item: unknown) => withInputChecks(item, part);
  const copy: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(schema)) {
    if (ONE.has(key)) copy[key] = Array.isArray(value) ? value.map(nested) : nested(value);
    else if (LIST.has(key)) copy[key] = Array.isArray(value) ? value.map(nested) : value;
    else if (MAP.has(key)) copy[key] = mapValues(value, nested);
    else copy[key] = value;
  }
  const types = Array.isArray(copy.type) ? copy.type : [copy.type];
  if (part === 'body' && types.includes('string') && !isTextKind(copy[TEXT_KIND_KEYWORD])) {
    copy[TEXT_KIND_KEYWORD] = 'line';
  }
  if (part === 'text' && (types.includes('integer') || types.includes('number'))) copy[FINITE_KEYWORD] = true;
  return copy;
}

export function strictBodySchemaController(): SchemaController {
  const fromPool = AjvCompiler();
  const buildValidator: AjvCompiler.BuildCompilerFromPool = (externalSchemas) => {
    const lenient = fromPool(externalSchemas, {
      customOptions: { ...COMMON, keywords: KEYWORDS, coerceTypes: 'array', useDefaults: true },
    });
    const strict = fromPool(externalSchemas, {
      customOptions: { ...COMMON, keywords: KEYWORDS, coerceTypes: false, useDefaults: false },
    });
    // Fastify calls the compiler with a route definition; the pool's own type only says "schema".
    const compile = (route: AjvCompiler.RouteDefinition) => {
      const body = route.httpPart === 'body';
      const checked = { ...route, schema: withInputChecks(route.schema, body ? 'body' : 'text') };
      return body ? strict(checked as never) : lenient(checked as never);
    };
    return compile as unknown as ReturnType<AjvCompiler.BuildCompilerFromPool>;
  };
  return { compilersFactory: { buildValidator } };
}
