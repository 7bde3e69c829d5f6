import type { AuthenticationResponseJSON, RegistrationResponseJSON } from '@simplewebauthn/server';
import { type Static, Type } from 'typebox';
import { Compile } from 'typebox/compile';

// The shapes a browser sends back from navigator.credentials.create / get,
// as @simplewebauthn/browser serializes them (base64url strings), and the
// forms and JSON bodies of the passkey routes. The credential arrives as JSON
// text in a form field: attacker-controlled, parsed here and checked against
// these schemas before the library sees any of it.

const base64url = (maxLength: number) => Type.String({ pattern: '^[A-Za-z0-9_-]*$', maxLength });
const CREDENTIAL_ID = base64url(1364);
const strict = { additionalProperties: false } as const;
const attachment = Type.Optional(Type.Union([Type.Literal('platform'), Type.Literal('cross-platform')]));
// Extension outputs are small maps of the browser's making (credProps: { rk }); they are not used.
const extensionOutputs = Type.Record(Type.String({ maxLength: 64 }), Type.Unknown(), { maxProperties: 16 });

const RegistrationCredential = Type.Object(
  {
    id: CREDENTIAL_ID,
    rawId: CREDENTIAL_ID,
    response: Type.Object(
      {
        clientDataJSON: base64url(4096),
        attestationObject: base64url(32768),
        authenticatorData: Type.Optional(base64url(32768)),
        transports: Type.Optional(Type.Array(Type.String({ maxLength: 32 }), { maxItems: 10 })),
        publicKeyAlgorithm: Type.Optional(Type.Integer()),
        publicKey: Type.Optional(base64url(4096)),
      },
      strict,
    ),
    authenticatorAttachment: attachment,
    clientExtensionResults: extensionOutputs,
    type: Type.Literal('public-key'),
  },
  strict,
);

const AuthenticationCredential = Type.Object(
  {
    id: CREDENTIAL_ID,
    rawId: CREDENTIAL_ID,
    response: Type.Object(
      {
        clientDataJSON: base64url(4096),
        authenticatorData: base64url(32768),
        signature: base64url(2048),
        userHandle: Type.Optional(base64url(128)),
      },
      strict,
    ),
    authenticatorAttachment: attachment,
    clientExtensionResults: extensionOutputs,
    type: Type.Literal('public-key'),
  },
  strict,
);

const registrationCheck = Compile(RegistrationCredential);
const authenticationCheck = Compile(AuthenticationCredential);

const TRANSPORTS: readonly string[] = ['ble', 'cable', 'hybrid', 'internal', 'nfc', 'smart-card', 'usb'];

/** The transports a browser reported, keeping only those WebAuthn names (an unknown one is dropped, not refused). */
export function knownTransports(reported: readonly string[] | undefined): string[] {
  return [...new Set(reported ?? [])].filter((transport) => TRANSPORTS.includes(transport));
}

function parsed(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The registration credential in `text`, or undefined if it is not JSON of that shape. */
export function readRegistrationCredential(text: string): RegistrationResponseJSON | undefined {
  const value = parsed(text);
  if (!registrationCheck.Check(value)) return undefined;
  const credential: Static<typeof RegistrationCredential> = value;
  return {
    ...credential,
    response: { ...credential.response, transports: knownTransports(credential.response.transports) },
  };
}

/** The authentication credential in `text`, or undefined if it is not JSON of that shape. */
export function readAuthenticationCredential(text: string): AuthenticationResponseJSON | undefined {
  const value = parsed(text);
  return authenticationCheck.Check(value) ? value : undefined;
}

/** A passkey's name: one line, 1 to 100 characters (the form's schema checks the line; this, the length). */
export const PASSKEY_NAME_MAX = 100;
/** Credential JSON as a form field: a registration's attestation object is the largest part. */
export const CREDENTIAL_TEXT_MAX = 48 * 1024;

const form = { additionalProperties: false } as const;

export const RegisterForm = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: PASSKEY_NAME_MAX }),
    credential: Type.String({ minLength: 1, maxLength: CREDENTIAL_TEXT_MAX }),
  },
  form,
);

export const RenameForm = Type.Object(
  { name: Type.String({ minLength: 1, maxLength: PASSKEY_NAME_MAX }) },
  form,
);

export const AssertionForm = Type.Object(
  {
    credential: Type.String({ minLength: 1, maxLength: CREDENTIAL_TEXT_MAX }),
    next: Type.Optional(Type.String({ maxLength: 1000 })),
  },
  form,
);

/** An options route takes an empty JSON object: what a ceremony is for comes from the route and the cookies. */
export const OptionsBody = Type.Object({}, { additionalProperties: false });

export const FactorParams = Type.Object({ id: Type.String({ format: 'uuid' }) }, form);

const descriptor = Type.Object({
  id: Type.String(),
  type: Type.String(),
  transports: Type.Optional(Type.Array(Type.String())),
});
const { Optional } = Type;
const challenge = Type.String({ description: 'base64url; valid for 5 minutes, once' });

/** PublicKeyCredentialCreationOptionsJSON as the server sends it (the response schema is an allowlist). */
export const CreationOptions = Type.Object(
  {
    challenge,
    rp: Type.Object({ name: Type.String(), id: Optional(Type.String()) }),
    user: Type.Object({ id: Type.String(), name: Type.String(), displayName: Type.String() }),
    pubKeyCredParams: Type.Array(Type.Object({ alg: Type.Integer(), type: Type.String() })),
    timeout: Optional(Type.Integer()),
    attestation: Optional(Type.String()),
    excludeCredentials: Optional(Type.Array(descriptor)),
    authenticatorSelection: Optional(
      Type.Object({
        residentKey: Optional(Type.String()),
        requireResidentKey: Optional(Type.Boolean()),
        userVerification: Optional(Type.String()),
      }),
    ),
    extensions: Optional(Type.Object({ credProps: Optional(Type.Boolean()) })),
    hints: Optional(Type.Array(Type.String())),
  },
  { description: 'Options for navigator.credentials.create() (@simplewebauthn/browser startRegistration)' },
);

/** PublicKeyCredentialRequestOptionsJSON as the server sends it. */
export const RequestOptions = Type.Object(
  {
    rpId: Optional(Type.String()),
    challenge,
    allowCredentials: Optional(Type.Array(descriptor)),
    timeout: Optional(Type.Integer()),
    userVerification: Optional(Type.String()),
  },
  { description: 'Options for navigator.credentials.get() (@simplewebauthn/browser startAuthentication)' },
);

/** The sign-in challenge of /login/verify/:challenge: any text up to a uuid's length (a bad one is answered as a dead step). */
export const StepParams = Type.Object({ challenge: Type.String({ maxLength: 36 }) }, form);
