import { A2A_PROTOCOL_VERSION } from '@a2a-js/sdk';

// An agent's public A2A card (RLY-1), built from the agent and its template,
// in the JSON form of the A2A version that @a2a-js/sdk speaks (1.0): the
// endpoint is the first of `supportedInterfaces`, security schemes are
// tagged by kind. Pure: no database, no key. What a card may show is this
// file's whole output: the agent's handle, name and description, its
// template's name and description, and the relay's address. Never the
// tenant, the owner, an email or the instance's subdomain.
//
// Every member is set and, but for the bearer requirement's scope list (a
// bearer token has no scopes), none is empty: the signature (card-signing.ts)
// covers the card exactly as served, with nothing an A2A reader drops.

/** The agent, as much of it as a card may show. */
export interface CardAgent {
  readonly handle: string;
  readonly name: string;
  readonly description: string;
  /** The agent's template id. */
  readonly template: string;
  readonly updated_at: Date;
}

/** The template's public words; undefined when the operator removed it. */
export interface CardTemplate {
  readonly id: string;
  readonly name: string;
  readonly description: string;
}

export interface AgentInterfaceJson {
  readonly url: string;
  readonly protocolBinding: 'JSONRPC';
  readonly protocolVersion: string;
}

export interface AgentSkillJson {
  readonly id: string;
  readonly name: string;
  readonly description: string;
  readonly tags: string[];
}

export interface AgentCardSignatureJson {
  /** base64url of the JWS protected header (alg, kid, typ, jku). */
  readonly protected: string;
  /** base64url of the Ed25519 signature; the payload is detached (the card itself). */
  readonly signature: string;
}

/** A card as served, before it is signed. */
export interface UnsignedAgentCard {
  readonly name: string;
  readonly description: string;
  readonly supportedInterfaces: AgentInterfaceJson[];
  readonly version: string;
  readonly capabilities: { readonly streaming: boolean; readonly pushNotifications: boolean };
  readonly securitySchemes: {
    readonly [RELAY_SECURITY_SCHEME]: {
      readonly httpAuthSecurityScheme: {
        readonly scheme: 'Bearer';
        readonly bearerFormat: string;
        readonly description: string;
      };
    };
  };
  readonly securityRequirements: [
    { readonly schemes: { readonly [RELAY_SECURITY_SCHEME]: { readonly list: string[] } } },
  ];
  readonly defaultInputModes: string[];
  readonly defaultOutputModes: string[];
  readonly skills: AgentSkillJson[];
}

export interface SignedAgentCard extends UnsignedAgentCard {
  readonly signatures: AgentCardSignatureJson[];
}

/** The name the card's security scheme and requirement share. */
export const RELAY_SECURITY_SCHEME = 'relay_token';
/** What a relay token starts with (the whole token is shown once, when the caller claims it). */
export const RELAY_TOKEN_PREFIX = 'enc_relay_';

/** The relay's A2A endpoint for a handle: what the card names as the agent's address. */
export function relayEndpoint(publicUrl: string, handle: string): string {
  return `${publicUrl}/a2a/${handle}`;
}

/** Where the card is published (besides the A2A well-known path under the endpoint). */
export function cardPath(handle: string): string {
  return `/agents/${handle}/card.json`;
}

export function buildAgentCard(
  publicUrl: string,
  agent: CardAgent,
  template: CardTemplate | undefined,
): UnsignedAgentCard {
  // A2A requires a description; an agent without one says what it is built from.
  const description =
    agent.description.trim() !== ''
      ? agent.description
      : `${agent.name}, an agent built from the ${template?.name ?? agent.template} template.`;
  return {
    name: agent.name,
    description,
    supportedInterfaces: [
      {
        url: relayEndpoint(publicUrl, agent.handle),
        protocolBinding: 'JSONRPC',
        protocolVersion: A2A_PROTOCOL_VERSION,
      },
    ],
    // The agent's own version: it changes whenever its settings do.
    version: agent.updated_at.toISOString(),
    capabilities: { streaming: false, pushNotifications: false },
    securitySchemes: {
      [RELAY_SECURITY_SCHEME]: {
        httpAuthSecurityScheme: {
          scheme: 'Bearer',
          bearerFormat: `${RELAY_TOKEN_PREFIX}…`,
          description:
            "A relay token, issued once to a caller after the agent's owner approves its connection request.",
        },
      },
    },
    // A scope named, not an empty list: verifiers that drop empty values before canonicalizing (@a2a-js/sdk's) would sign other bytes.
    securityRequirements: [{ schemes: { [RELAY_SECURITY_SCHEME]: { list: ['relay'] } } }],
    defaultInputModes: ['text/plain'],
    defaultOutputModes: ['text/plain'],
    skills: [
      {
        id: template?.id ?? agent.template,
        name: template?.name ?? agent.template,
        description: template?.description.trim() || description,
        tags: [template?.id ?? agent.template],
      },
    ],
  };
}
