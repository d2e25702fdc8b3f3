/**
 * The caller's own credential: an OAuth 2.0 client-credentials access token (RFC 6749
 * §4.4), fetched from the token endpoint, cached, and refreshed before it expires.
 *
 * A `ClientCredentials` is what `DetokenizationClient` takes as `credential`; the client
 * asks it for a token on every call, and it answers from its cache until
 * `refreshMarginS` before expiry. Concurrent calls that find the cache stale share one
 * request to the token endpoint.
 */

/** How the client authenticates to the token endpoint (RFC 6749 §2.3.1). */
export type ClientAuthMethod = "client_secret_basic" | "client_secret_post";

/** Anything that yields the caller's current access token. */
export type Credential = (() => string | Promise<string>) | { token(): Promise<string> };

export interface ClientCredentialsOptions {
  tokenUrl: string;
  clientId: string;
  clientSecret: string;
  /** The API the token is for; piigate's caller audience (Auth0-style `audience`). */
  audience: string;
  scope?: string;
  /** Default `client_secret_basic`, which RFC 6749 §2.3.1 requires servers to support. */
  authMethod?: ClientAuthMethod;
  /** Bound on each token request, milliseconds (default 5000). */
  timeoutMs?: number;
  /** Refresh this long before the token's expiry, seconds (default 30). */
  refreshMarginS?: number;
  /** Milliseconds clock; tests pass their own. */
  now?: () => number;
  /** The fetch to use; tests pass their own. */
  fetch?: typeof fetch;
}

const MAX_BODY_BYTES = 64 * 1024;

/** Fetches `grant_type=client_credentials` tokens and caches each until shortly before expiry. */
export class ClientCredentials {
  readonly #options: Required<Omit<ClientCredentialsOptions, "scope">> & { scope?: string };
  #token: string | null = null;
  #refreshAt = 0;
  #inFlight: Promise<string> | null = null;

  constructor(options: ClientCredentialsOptions) {
    const scheme = new URL(options.tokenUrl).protocol;
    if (scheme !== "https:" && scheme !== "http:") {
      throw new TypeError("tokenUrl must be an http(s) URL");
    }
    this.#options = {
      authMethod: "client_secret_basic",
      timeoutMs: 5000,
      refreshMarginS: 30,
      now: Date.now,
      fetch: globalThis.fetch,
      ...options,
    };
  }

  /** The current access token, fetching a new one when none is cached or it is about to expire. */
  async token(): Promise<string> {
    if (this.#token !== null && this.#options.now() < this.#refreshAt) {
      return this.#token;
    }
    this.#inFlight ??= this.#refresh().finally(() => {
      this.#inFlight = null;
    });
    return this.#inFlight;
  }

  /** Keep the secret out of logs and `util.inspect`. */
  toJSON(): Record<string, string> {
    return { clientId: this.#options.clientId, audience: this.#options.audience };
  }

  async #refresh(): Promise<string> {
    const { token, lifetimeS } = await this.#fetch();
    const margin = Math.min(this.#options.refreshMarginS, lifetimeS / 2);
    this.#token = token;
    this.#refreshAt = this.#options.now() + (lifetimeS - margin) * 1000;
    return token;
  }

  async #fetch(): Promise<{ token: string; lifetimeS: number }> {
    const o = this.#options;
    const form = new URLSearchParams({ grant_type: "client_credentials", audience: o.audience });
    if (o.scope) {
      form.set("scope", o.scope);
    }
    const headers: Record<string, string> = {
      "Content-Type": "application/x-www-form-urlencoded",
      Accept: "application/json",
    };
    if (o.authMethod === "client_secret_basic") {
      // RFC 6749 §2.3.1: each half is application/x-www-form-urlencoded before base64.
      const pair = `${formEncode(o.clientId)}:${formEncode(o.clientSecret)}`;
      headers.Authorization = `Basic ${Buffer.from(pair, "utf8").toString("base64")}`;
    } else {
      form.set("client_id", o.clientId);
      form.set("client_secret", o.clientSecret);
    }
    const response = await o.fetch(o.tokenUrl, {
      method: "POST",
      headers,
      body: form.toString(),
      redirect: "error",
      signal: AbortSignal.timeout(o.timeoutMs),
    });
    const text = await response.text();
    if (text.length > MAX_BODY_BYTES) {
      throw new TokenEndpointError(response.status, "response_too_large");
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new TokenEndpointError(response.status, "response_not_json");
    }
    const answer = (typeof body === "object" && body !== null ? body : {}) as Record<string, unknown>;
    if (!response.ok) {
      const error = typeof answer.error === "string" ? answer.error : "http_error";
      throw new TokenEndpointError(response.status, error);
    }
    const token = answer.access_token;
    const lifetime = answer.expires_in ?? 300;
    if (typeof token !== "string" || !token || typeof lifetime !== "number" || !(lifetime > 0)) {
      throw new TokenEndpointError(response.status, "no_access_token");
    }
    return { token, lifetimeS: lifetime };
  }
}

/** The token endpoint refused or answered nonsense; `error` is its OAuth error code. */
export class TokenEndpointError extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
  ) {
    super(`token endpoint answered ${status}: ${error}`);
    this.name = "TokenEndpointError";
  }
}

/** `application/x-www-form-urlencoded` for one value (space as `+`). */
function formEncode(value: string): string {
  return new URLSearchParams({ v: value }).toString().slice(2);
}

/** The token a `Credential` yields now. */
export async function currentToken(credential: Credential): Promise<string> {
  return typeof credential === "function" ? credential() : credential.token();
}
