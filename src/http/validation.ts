import AjvCompiler from '@fastify/ajv-compiler';
import type { FastifyServerOptions } from 'fastify';

// Request schemas are validated with ajv, unknown fields rejected. Bodies are
// checked as sent, with no type coercion: {"name": 42} is not a string, and a
// client learns that rather than having 42 quietly become "42". Path
// parameters and query strings arrive as text and are coerced as usual.

type SchemaController = NonNullable<FastifyServerOptions['schemaController']>;

const COMMON = { removeAdditional: false, allErrors: true, addUsedSchema: false } as const;

export function strictBodySchemaController(): SchemaController {
  const fromPool = AjvCompiler();
  const buildValidator: AjvCompiler.BuildCompilerFromPool = (externalSchemas) => {
    const lenient = fromPool(externalSchemas, {
      customOptions: { ...COMMON, coerceTypes: 'array', useDefaults: true },
    });
    const strict = fromPool(externalSchemas, {
      customOptions: { ...COMMON, coerceTypes: false, useDefaults: false },
    });
    // Fastify calls the compiler with a route definition; the pool's own type only says "schema".
    const compile = (route: AjvCompiler.RouteDefinition) =>
      route.httpPart === 'body' ? strict(route as never) : lenient(route as never);
    return compile as unknown as ReturnType<AjvCompiler.BuildCompilerFromPool>;
  };
  return { compilersFactory: { buildValidator } };
}
