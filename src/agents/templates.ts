import { constants } from 'node:fs';
import { type FileHandle, open, readdir } from 'node:fs/promises';
import path from 'node:path';
import { Type } from 'typebox';
import { Compile } from 'typebox/compile';
import type { Config } from '../config.ts';
import { AppError } from '../errors.ts';
import { MODEL_PROVIDERS, type ModelProvider } from '../gateway/provider-names.ts';
import { sandboxGateway } from '../gateway/providers.ts';
import type { InstanceLimits } from './runtime/driver.ts';

// Agent templates: operator-defined JSON files, one per template, in the
// built-in templates/ directory and in ENCLAVE_TEMPLATES_DIR. They are read
// and validated once at start-up; a bad file stops start-up with one line that
// names the file, the JSON path and what is wrong. Users pick a template when
// they onboard an agent and supply the credentials it declares.

export interface TemplateCredential {
  readonly name: string;
  readonly description: string;
  readonly required: boolean;
  /** Env var the runtime sets from this credential; absent for credentials only the model gateway uses. */
  readonly env: string | undefined;
  /** Model-gateway provider this key is for (gateway/providers.ts); such a key is never put in the agent's environment. */
  readonly provider: ModelProvider | undefined;
  /** Optional format check (a JavaScript regular expression source, compiled with the 'u' flag). */
  readonly pattern: string | undefined;
  /** The pattern in words, for people ("starts with sk-ant-"): pages and errors never show the expression itself. */
  readonly patternDescription: string | undefined;
  /** Credentials sharing a one_of label: at least one of them must be supplied at onboarding. */
  readonly oneOf: string | undefined;
}

export interface AgentTemplate {
  readonly id: string;
  readonly name: string;
  readonly description: string;
  readonly command: readonly string[];
  /** The port the agent listens on inside its sandbox. */
  readonly port: number;
  /** Two characters that start its instances' subdomains (AGT-3). */
  readonly prefix: string;
  /** Per-instance limits, the template's or DEFAULT_LIMITS (AGT-6). */
  readonly limits: InstanceLimits;
  readonly modelGateway: boolean;
  /** Where the relay POSTs a thread's caller messages (src/relay/delivery.ts); default DEFAULT_RELAY_PATH. */
  readonly relayPath: string;
  readonly credentials: readonly TemplateCredential[];
  /** Absolute directory of the JSON file; relative paths in `command` resolve against it (next issue's runtime). */
  readonly dir: string;
}

export interface TemplateCatalog {
  /** Every template, sorted by id. */
  list(): readonly AgentTemplate[];
  get(id: string): AgentTemplate | undefined;
}

export type TemplateErrorCode = 'template_invalid';

const MAX_PROBLEMS_SHOWN = 20;

/** Every problem found in the template files, each `file: /json/path: what is wrong`. */
export class TemplateError extends AppError<TemplateErrorCode> {
  readonly problems: readonly string[];

  constructor(problems: readonly string[]) {
    const shown = problems.slice(0, MAX_PROBLEMS_SHOWN);
    const more = problems.length - shown.length;
    // One line, for the start-up error: `enclave: agent templates are not valid: …`.
    const text = `agent templates are not valid: ${shown.join('; ')}${more > 0 ? `; and ${more} more` : ''}`;
    super('template_invalid', text.replace(/[\r\n]+/g, ' '));
    this.problems = Object.freeze([...problems]);
  }
}

/** <repo>/templates: found from this file, not from the working directory. */
export const BUILT_IN_TEMPLATES_DIR: string = path.resolve(import.meta.dirname, '..', '..', 'templates');

export const MAX_TEMPLATE_FILE_BYTES = 64 * 1024;
const MAX_PATTERN_LENGTH = 200;
/** The relay path a template that names none gets. */
export const DEFAULT_RELAY_PATH = '/messages';
export const MAX_RELAY_PATH_LENGTH = 200;

/** Variables the platform sets in every agent's environment; a credential may not name one. */
export const PLATFORM_ENV_NAMES: ReadonlySet<string> = new Set([
  'PATH',
  'HOME',
  'USER',
  'SHELL',
  'PWD',
  'TMPDIR',
  'LANG',
  'PORT',
  'HTTP_PROXY',
  'HTTPS_PROXY',
  'NO_PROXY',
  'http_proxy',
  'https_proxy',
  'no_proxy',
  'NODE_OPTIONS',
  'LD_PRELOAD',
  'LD_LIBRARY_PATH',
  // The model SDKs' base-URL and key variables, which point an agent at its gateway (AGT-7).
  ...Object.keys(sandboxGateway(0).env),
  ...sandboxGateway(0).keyVariables,
]);
const PLATFORM_ENV_PREFIX = 'ENCLAVE_';

// ---------------------------------------------------------------- file format

const CREDENTIAL_NAME = '^[a-z][a-z0-9_]{0,62}$';

const CredentialFile = Type.Object(
  {
    name: Type.String({ pattern: CREDENTIAL_NAME }),
    description: Type.String({ minLength: 1, maxLength: 500 }),
    required: Type.Boolean(),
    env: Type.Optional(Type.String({ pattern: '^[A-Z][A-Z0-9_]{0,127}$' })),
    provider: Type.Optional(Type.Enum(MODEL_PROVIDERS)),
    pattern: Type.Optional(Type.String({ minLength: 1, maxLength: MAX_PATTERN_LENGTH })),
    pattern_description: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    one_of: Type.Optional(Type.String({ pattern: CREDENTIAL_NAME })),
  },
  { additionalProperties: false },
);

const TemplateFile = Type.Object(
  {
    id: Type.String({ pattern: '^[a-z][a-z0-9-]{1,39}$' }),
    name: Type.String({ minLength: 1, maxLength: 100 }),
    description: Type.String({ minLength: 1, maxLength: 1000 }),
    command: Type.Array(Type.String({ minLength: 1, maxLength: 4096 }), { minItems: 1, maxItems: 64 }),
    port: Type.Integer({ minimum: 1024, maximum: 65535 }),
    prefix: Type.String({ pattern: '^[a-z0-9]{2}$' }),
    model_gateway: Type.Boolean(),
    // A path of the instance's own server: origin-form, plain characters only (no query, fragment,
    // space or percent-encoding, which could spell a dot segment).
    relay_path: Type.Optional(
      Type.String({ maxLength: MAX_RELAY_PATH_LENGTH, pattern: '^/[A-Za-z0-9._~/-]*$' }),
    ),
    credentials: Type.Array(CredentialFile, { maxItems: 32 }),
    limits: Type.Optional(
      Type.Object(
        {
          memory_mb: Type.Optional(Type.Integer({ minimum: 32, maximum: 65536 })),
          processes: Type.Optional(Type.Integer({ minimum: 4, maximum: 4096 })),
          open_files: Type.Optional(Type.Integer({ minimum: 64, maximum: 65536 })),
          cpu_percent: Type.Optional(Type.Integer({ minimum: 5, maximum: 1600 })),
          volume_mb: Type.Optional(Type.Integer({ minimum: 1, maximum: 1048576 })),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);

interface CredentialFileShape {
  name: string;
  description: string;
  required: boolean;
  env?: string;
  provider?: ModelProvider;
  pattern?: string;
  pattern_description?: string;
  one_of?: string;
}

interface TemplateFileShape {
  id: string;
  name: string;
  description: string;
  command: string[];
  port: number;
  prefix: string;
  model_gateway: boolean;
  relay_path?: string;
  credentials: CredentialFileShape[];
  limits?: {
    memory_mb?: number;
    processes?: number;
    open_files?: number;
    cpu_percent?: number;
    volume_mb?: number;
  };
}

/** What an instance gets when its template names no limit. */
export const DEFAULT_LIMITS: InstanceLimits = Object.freeze({
  memoryMb: 256,
  processes: 64,
  openFiles: 1024,
  cpuPercent: 100,
  volumeMb: 256,
});

const templateFileValidator = Compile(TemplateFile);

function pointer(base: string, key: string): string {
  return `${base}/${key.replaceAll('~', '~0').replaceAll('/', '~1')}`;
}

function shown(at: string): string {
  return at === '' ? '/' : at;
}

/** The schema's verdict as `/json/path: message` lines, in terms an operator editing the file understands. */
function shapeProblems(value: unknown): string[] {
  const problems = new Set<string>();
  for (const error of templateFileValidator.Errors(value)) {
    const at = error.instancePath;
    const params = error.params as {
      additionalProperties?: string[];
      requiredProperties?: string[];
      allowedValues?: unknown[];
    };
    if (error.keyword === 'additionalProperties' || error.keyword === 'boolean') {
      const names = params.additionalProperties;
      if (names === undefined) problems.add(`${shown(at)}: is not an accepted field`);
      else for (const name of names) problems.add(`${pointer(at, name)}: is not an accepted field`);
    } else if (error.keyword === 'required' && params.requiredProperties !== undefined) {
      for (const name of params.requiredProperties) problems.add(`${pointer(at, name)}: is required`);
    } else if (error.keyword === 'enum' && params.allowedValues !== undefined) {
      problems.add(
        `${shown(at)}: must be one of ${params.allowedValues.map((v) => JSON.stringify(v)).join(', ')}`,
      );
    } else {
      problems.add(`${shown(at)}: ${error.message}`);
    }
  }
  return [...problems];
}

// ---------------------------------------------------------------- rules beyond the shape

function envProblem(env: string): string | undefined {
  if (env.startsWith(PLATFORM_ENV_PREFIX))
    return `"${env}" is reserved: ${PLATFORM_ENV_PREFIX}* is set by the platform`;
  if (PLATFORM_ENV_NAMES.has(env)) return `"${env}" is reserved: the platform sets it`;
  return undefined;
}

function patternProblem(pattern: string): string | undefined {
  try {
    new RegExp(pattern, 'u');
    return undefined;
  } catch (error) {
    return `is not a valid regular expression (${(error as Error).message})`;
  }
}

function credentialProblems(template: TemplateFileShape): string[] {
  const problems: string[] = [];
  const seen = {
    name: new Map<string, number>(),
    env: new Map<string, number>(),
    provider: new Map<string, number>(),
  };
  const oneOfCounts = new Map<string, number>();
  for (const credential of template.credentials) {
    if (credential.one_of !== undefined) {
      oneOfCounts.set(credential.one_of, (oneOfCounts.get(credential.one_of) ?? 0) + 1);
    }
  }
  template.credentials.forEach((credential, index) => {
    const at = `/credentials/${index}`;
    for (const key of ['name', 'env', 'provider'] as const) {
      const value = credential[key];
      if (value === undefined) continue;
      const first = seen[key].get(value);
      if (first === undefined) seen[key].set(value, index);
      else problems.push(`${at}/${key}: "${value}" is already used by /credentials/${first}`);
    }
    if ((credential.env === undefined) === (credential.provider === undefined)) {
      problems.push(
        `${at}: must have exactly one of "env" (the agent reads it) or "provider" (the model gateway uses it)`,
      );
    }
    if (credential.env !== undefined) {
      const problem = envProblem(credential.env);
      if (problem !== undefined) problems.push(`${at}/env: ${problem}`);
    }
    if (credential.provider !== undefined && !template.model_gateway) {
      problems.push(`${at}/provider: a provider credential needs "model_gateway": true`);
    }
    if (credential.pattern !== undefined) {
      const problem = patternProblem(credential.pattern);
      if (problem !== undefined) problems.push(`${at}/pattern: ${problem}`);
    } else if (credential.pattern_description !== undefined) {
      problems.push(`${at}/pattern_description: describes a "pattern", and there is none`);
    }
    if (credential.one_of !== undefined) {
      if (credential.required) {
        problems.push(
          `${at}/required: must be false for a "one_of" credential (one of the group is required)`,
        );
      }
      if ((oneOfCounts.get(credential.one_of) ?? 0) < 2) {
        problems.push(`${at}/one_of: "${credential.one_of}" must be shared by at least two credentials`);
      }
    }
  });
  return problems;
}

function ruleProblems(template: TemplateFileShape, fileName: string): string[] {
  const problems: string[] = [];
  if (fileName !== `${template.id}.json`) {
    problems.push(`/id: "${template.id}" must match the file name (expected ${template.id}.json)`);
  }
  template.command.forEach((argument, index) => {
    if (argument.includes('\0')) problems.push(`/command/${index}: contains a NUL byte`);
  });
  // `..` could climb out of what the path names once the agent's server normalises it; `//` reads as a host to some.
  const relayPath = template.relay_path ?? '';
  if (relayPath.includes('..') || relayPath.includes('//')) {
    problems.push('/relay_path: must not contain ".." or "//"');
  }
  problems.push(...credentialProblems(template));
  return problems;
}

// ---------------------------------------------------------------- reading the files

function fsReason(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  switch (code) {
    case 'ENOENT':
      return 'does not exist';
    case 'ENOTDIR':
      return 'is not a directory';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    default:
      return code ?? (error as Error).message;
  }
}

/** A value, or the problems (`file: …` lines) that stopped it. */
type Read<T> = { ok: true; value: T } | { ok: false; problems: string[] };

function failed(problem: string): { ok: false; problems: string[] } {
  return { ok: false, problems: [problem] };
}

async function readTemplateText(file: string): Promise<Read<string>> {
  let handle: FileHandle;
  try {
    // Non-blocking, so a FIFO named *.json cannot hang start-up; it is refused below as not a regular file.
    handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (error) {
    return failed(`${file}: cannot be read (${fsReason(error)})`);
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) return failed(`${file}: is not a regular file`);
    const tooLarge = `${file}: is larger than ${MAX_TEMPLATE_FILE_BYTES / 1024} KiB`;
    if (info.size > MAX_TEMPLATE_FILE_BYTES) return failed(tooLarge);
    const bytes = await handle.readFile();
    if (bytes.length > MAX_TEMPLATE_FILE_BYTES) return failed(tooLarge);
    try {
      return { ok: true, value: new TextDecoder('utf-8', { fatal: true }).decode(bytes) };
    } catch {
      return failed(`${file}: is not valid UTF-8`);
    }
  } catch (error) {
    return failed(`${file}: cannot be read (${fsReason(error)})`);
  } finally {
    await handle.close();
  }
}

function toTemplate(parsed: TemplateFileShape, dir: string): AgentTemplate {
  return Object.freeze({
    id: parsed.id,
    name: parsed.name,
    description: parsed.description,
    command: Object.freeze([...parsed.command]),
    port: parsed.port,
    prefix: parsed.prefix,
    limits: Object.freeze({
      memoryMb: parsed.limits?.memory_mb ?? DEFAULT_LIMITS.memoryMb,
      processes: parsed.limits?.processes ?? DEFAULT_LIMITS.processes,
      openFiles: parsed.limits?.open_files ?? DEFAULT_LIMITS.openFiles,
      cpuPercent: parsed.limits?.cpu_percent ?? DEFAULT_LIMITS.cpuPercent,
      volumeMb: parsed.limits?.volume_mb ?? DEFAULT_LIMITS.volumeMb,
    }),
    modelGateway: parsed.model_gateway,
    relayPath: parsed.relay_path ?? DEFAULT_RELAY_PATH,
    credentials: Object.freeze(
      parsed.credentials.map((credential) =>
        Object.freeze({
          name: credential.name,
          description: credential.description,
          required: credential.required,
          env: credential.env,
          provider: credential.provider,
          pattern: credential.pattern,
          patternDescription: credential.pattern_description,
          oneOf: credential.one_of,
        }),
      ),
    ),
    dir,
  });
}

/** One file: the template, or every problem found in it. */
async function loadTemplateFile(dir: string, fileName: string): Promise<Read<AgentTemplate>> {
  const file = path.join(dir, fileName);
  const text = await readTemplateText(file);
  if (!text.ok) return text;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text.value);
  } catch (error) {
    return failed(`${file}: is not valid JSON (${(error as Error).message})`);
  }
  // The file is the operator's, but checked as strictly as a request body: unknown fields are refused.
  const shape = shapeProblems(parsed);
  if (shape.length > 0) return { ok: false, problems: shape.map((problem) => `${file}: ${problem}`) };
  const template = parsed as TemplateFileShape;
  const rules = ruleProblems(template, fileName);
  if (rules.length > 0) return { ok: false, problems: rules.map((problem) => `${file}: ${problem}`) };
  return { ok: true, value: toTemplate(template, dir) };
}

async function templateFileNames(dir: string): Promise<Read<string[]>> {
  try {
    const entries = await readdir(dir, { withFileTypes: true });
    // Only *.json at the top level are templates; subdirectories hold the agents' code.
    const names = entries
      .filter((entry) => entry.name.endsWith('.json') && !entry.isDirectory())
      .map((entry) => entry.name);
    return { ok: true, value: names.sort() };
  } catch (error) {
    return failed(`${dir}: cannot read the templates directory (${fsReason(error)})`);
  }
}

function createCatalog(templates: readonly AgentTemplate[]): TemplateCatalog {
  const sorted = Object.freeze([...templates].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)));
  // The id a client asks for is attacker-controlled: a Map, so "__proto__" or "constructor" find nothing.
  const byId = new Map(sorted.map((template) => [template.id, template]));
  return Object.freeze({
    list: () => sorted,
    get: (id: string) => byId.get(id),
  });
}

/**
 * Reads every `<id>.json` in `dirs`, in order. Throws one TemplateError
 * listing every problem in every file; an id defined twice (in two
 * directories) is a problem, never an override.
 */
export async function loadTemplateCatalog(dirs: readonly string[]): Promise<TemplateCatalog> {
  const problems: string[] = [];
  const templates: AgentTemplate[] = [];
  const fileOf = new Map<string, string>();
  // The same directory named twice is read once.
  for (const dir of new Set(dirs.map((d) => path.resolve(d)))) {
    const names = await templateFileNames(dir);
    if (!names.ok) {
      problems.push(...names.problems);
      continue;
    }
    for (const name of names.value) {
      const loaded = await loadTemplateFile(dir, name);
      if (!loaded.ok) {
        problems.push(...loaded.problems);
        continue;
      }
      const file = path.join(dir, name);
      const earlier = fileOf.get(loaded.value.id);
      if (earlier !== undefined) {
        problems.push(`${file}: /id: "${loaded.value.id}" is already defined by ${earlier}`);
        continue;
      }
      fileOf.set(loaded.value.id, file);
      templates.push(loaded.value);
    }
  }
  if (problems.length > 0) throw new TemplateError(problems);
  return createCatalog(templates);
}

/** The directories templates load from: the built-in one, then ENCLAVE_TEMPLATES_DIR when set. */
export function templateDirs(config: Pick<Config, 'templatesDir'>): string[] {
  return config.templatesDir === undefined
    ? [BUILT_IN_TEMPLATES_DIR]
    : [BUILT_IN_TEMPLATES_DIR, config.templatesDir];
}

/** True when value satisfies the credential's pattern (or it has none). */
export function credentialFormatOk(credential: TemplateCredential, value: string): boolean {
  if (credential.pattern === undefined) return true;
  // `value` is the user's credential (attacker-controlled); the pattern is the operator's, checked at start-up.
  // The caller bounds the value's length, which bounds the cost of a badly written pattern.
  return new RegExp(credential.pattern, 'u').test(value);
}
