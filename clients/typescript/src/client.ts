/**
 * `DetokenizationClient`: piigate's `piigate.v1.DetokenizationService` over @grpc/grpc-js,
 * with the shape of the Python client (clients/piigate_client/client.py).
 *
 * Every call carries the caller's own access token (`authorization: Bearer ...`, asked of
 * the credential on every call so it can refresh) and a deadline; failures are rejected
 * as `PiigateError` subclasses carrying piigate's reason; a batch answers per item.
 */

import {
  ChannelCredentials,
  Metadata,
  type ChannelOptions,
  type ServiceError,
} from "@grpc/grpc-js";

import { errorFromServiceError, errorFromStatus, type PiigateError } from "./errors";
import {
  type BatchDetokenizeRequest,
  type BatchDetokenizeResponse,
  type DetokenizeRequest,
  type DetokenizeResponse,
  DetokenizationServiceClient,
  Reason,
} from "./gen/piigate/v1/detokenization";
import { currentToken, type Credential } from "./oauth";
import { disclosureName, reasonName, REASON_NUMBERS, type DisclosureName, type ReasonName } from "./wire";

export const DEFAULT_TIMEOUT_MS = 2000;
const SERVICE = "piigate.v1.DetokenizationService";

/**
 * gRPC's own retry (gRFC A6), set on the channel as its service config: only UNAVAILABLE
 * (piigate answers it when nothing was disclosed: vault or audit unavailable, no
 * connection), at most 3 attempts, exponential backoff with jitter, all within the call's
 * deadline. Permission, authentication and validation failures are never retried: the
 * same request would get the same answer.
 */
export const RETRY_SERVICE_CONFIG = {
  methodConfig: [
    {
      name: [{ service: SERVICE }],
      retryPolicy: {
        maxAttempts: 3,
        initialBackoff: "0.1s",
        maxBackoff: "1s",
        backoffMultiplier: 2,
        retryableStatusCodes: ["UNAVAILABLE"],
      },
    },
  ],
} as const;

/** One disclosed field. `value` is "" when `disclosure` is "redacted". */
export interface Field {
  readonly name: string;
  readonly value: string;
  readonly disclosure: DisclosureName;
}

/** A successful answer: the vault token id, the deciding profile, the reason and the fields in profile order. */
export class Detokenized {
  constructor(
    readonly tokenId: string,
    readonly profile: string,
    readonly reason: ReasonName | "",
    readonly fields: readonly Field[],
    /** The audit event's request id: quote it to find the audit line. */
    readonly requestId: string = "",
  ) {}

  /** The field named `name`, or undefined when it was not disclosed. */
  get(name: string): Field | undefined {
    return this.fields.find((field) => field.name === name);
  }

  /** Field names only: values stay out of logs and `JSON.stringify` by accident. */
  toJSON(): Record<string, unknown> {
    return {
      tokenId: this.tokenId,
      profile: this.profile,
      requestId: this.requestId,
      fields: this.fields.map((f) => f.name),
    };
  }
}

export interface DetokenizeOptions {
  /** A subset of what the profile allows; empty means all of it. */
  fields?: readonly string[];
  /** Piiano's access reason; omitted means the profile's default. */
  reason?: ReasonName;
  /** Required with reason "Other", refused otherwise. */
  adhocReason?: string;
  /** Why this access happens (a ticket reference), for profiles that require one. */
  purpose?: string;
  /** launch_patient profiles: the FHIR Patient id in context; must match the token's. */
  patient?: string;
  /** This call's deadline, milliseconds from now (default: the client's). */
  timeoutMs?: number;
}

export interface ClientOptions {
  /** TLS (`credentials.createSsl(...)`); default plaintext, for loopback and meshes. */
  channelCredentials?: ChannelCredentials;
  /** The deadline of every call unless the call names its own (default 2000 ms). */
  timeoutMs?: number;
  /** Extra grpc-js channel options. */
  channelOptions?: ChannelOptions;
}

/** Client for one piigate target. Call `close()` when done. */
export class DetokenizationClient {
  readonly #stub: DetokenizationServiceClient;
  readonly #credential: Credential | null;
  readonly #timeoutMs: number;

  /** `credential` null: a caller known by its client certificate alone (mutual TLS). */
  constructor(target: string, credential: Credential | null, options: ClientOptions = {}) {
    this.#stub = new DetokenizationServiceClient(
      target,
      options.channelCredentials ?? ChannelCredentials.createInsecure(),
      {
        "grpc.service_config": JSON.stringify(RETRY_SERVICE_CONFIG),
        ...options.channelOptions,
      },
    );
    this.#credential = credential;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  /** Exchange the user's access token for the fields this caller's profile allows. */
  async detokenize(subjectToken: string, options: DetokenizeOptions = {}): Promise<Detokenized> {
    const request: DetokenizeRequest = {
      subjectToken,
      ...requestShape(options),
      subject: undefined,
      actorToken: "",
      patient: options.patient ?? "",
    };
    const [metadata, deadline] = await this.#callSetup(options);
    const response = await new Promise<DetokenizeResponse>((resolve, reject) => {
      this.#stub.detokenize(request, metadata, { deadline }, (error, answer) =>
        error ? reject(failure(error)) : resolve(answer),
      );
    });
    return result(response);
  }

  /**
   * Many users in one call: a result or a typed error per token, in order. The call itself
   * rejects only for the caller's own failure or a malformed batch.
   */
  async detokenizeMany(
    subjectTokens: readonly string[],
    options: DetokenizeOptions = {},
  ): Promise<Array<Detokenized | PiigateError>> {
    const request: BatchDetokenizeRequest = {
      subjectTokens: [...subjectTokens],
      ...requestShape(options),
      subjects: [],
      actorToken: "",
    };
    return this.#batch(request, options);
  }

  /**
   * Support tooling (`on_behalf_of` profiles): customers named by issuer and subject, with
   * the acting agent's own access token and the ticket as `options.purpose`. The customers'
   * tokens are never needed: piigate finds their vault tokens by the binding tag.
   */
  async detokenizeOnBehalfOf(
    actorToken: string,
    subjects: readonly SubjectRef[],
    options: DetokenizeOptions = {},
  ): Promise<Array<Detokenized | PiigateError>> {
    const request: BatchDetokenizeRequest = {
      subjectTokens: [],
      ...requestShape(options),
      subjects: subjects.map((s) => ({ issuer: s.issuer, subject: s.subject })),
      actorToken,
    };
    return this.#batch(request, options);
  }

  async #batch(
    request: BatchDetokenizeRequest,
    options: DetokenizeOptions,
  ): Promise<Array<Detokenized | PiigateError>> {
    const [metadata, deadline] = await this.#callSetup(options);
    const response = await new Promise<BatchDetokenizeResponse>((resolve, reject) => {
      this.#stub.batchDetokenize(request, metadata, { deadline }, (error, answer) =>
        error ? reject(failure(error)) : resolve(answer),
      );
    });
    return response.results.map((item) =>
      item.status === undefined || item.status.code === 0
        ? result(item.response)
        : errorFromStatus(item.status),
    );
  }

  /** Close the channel; calls in flight fail with CANCELLED. */
  close(): void {
    this.#stub.close();
  }

  async #callSetup(options: DetokenizeOptions): Promise<[Metadata, Date]> {
    // The deadline is fixed before the credential is asked, so a slow token endpoint
    // counts against the caller's budget too.
    const deadline = new Date(Date.now() + (options.timeoutMs ?? this.#timeoutMs));
    const metadata = new Metadata();
    if (this.#credential !== null) {
      metadata.set("authorization", `Bearer ${await currentToken(this.#credential)}`);
    }
    return [metadata, deadline];
  }
}

/** A customer named without their token: the configured issuer name and their `sub`. */
export interface SubjectRef {
  readonly issuer: string;
  readonly subject: string;
}

function requestShape(
  options: DetokenizeOptions,
): Pick<DetokenizeRequest, "fields" | "reason" | "adhocReason" | "purpose"> {
  if (options.reason !== undefined && !(options.reason in REASON_NUMBERS)) {
    throw new TypeError(`unknown reason ${JSON.stringify(options.reason)}`);
  }
  return {
    fields: [...(options.fields ?? [])],
    reason: options.reason === undefined ? Reason.REASON_UNSPECIFIED : REASON_NUMBERS[options.reason],
    adhocReason: options.adhocReason ?? "",
    purpose: options.purpose ?? "",
  };
}

function result(response: DetokenizeResponse | undefined): Detokenized {
  const answer = response ?? {
    tokenId: "", profile: "", reason: Reason.REASON_UNSPECIFIED, fields: [], requestId: "",
  };
  return new Detokenized(
    answer.tokenId,
    answer.profile,
    reasonName(answer.reason),
    answer.fields.map((f) => Object.freeze({ name: f.name, value: f.value, disclosure: disclosureName(f.disclosure) })),
    answer.requestId,
  );
}

function failure(error: ServiceError): PiigateError {
  return errorFromServiceError(error);
}
