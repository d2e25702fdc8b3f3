/**
 * The client's retry policy (gRPC service config on the channel), against a scripted
 * stand-in of the service on 127.0.0.1:0 that answers each attempt with the next status
 * and counts attempts: UNAVAILABLE is retried up to 3 attempts in all, refusals never.
 * Also: an ErrorInfo the server attaches is decoded from grpc-status-details-bin.
 */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Metadata, Server, ServerCredentials, status, type ServiceError } from "@grpc/grpc-js";

import { PermissionDenied, Unavailable, DetokenizationClient } from "../src/index";
import { ErrorInfo } from "../src/gen/google/rpc/error_details";
import { Status } from "../src/gen/google/rpc/status";
import { DetokenizationServiceService, Reason, type DetokenizationServiceServer } from "../src/gen/piigate/v1/detokenization";

let script: status[] = [];
let attempts = 0;
const server = new Server();
let target = "";

function refusal(code: status): Partial<ServiceError> {
  const info = ErrorInfo.encode({ reason: "SCRIPTED", domain: "piigate", metadata: { step: String(attempts) } }).finish();
  const details = Status.encode({
    code, message: "scripted",
    details: [{ typeUrl: "type.googleapis.com/google.rpc.ErrorInfo", value: Buffer.from(info) }],
  }).finish();
  const metadata = new Metadata();
  metadata.set("grpc-status-details-bin", Buffer.from(details));
  return { code, details: "scripted", metadata };
}

const service: DetokenizationServiceServer = {
  detokenize(_call, callback) {
    attempts += 1;
    const code = script[attempts - 1];
    if (code !== undefined) {
      callback(refusal(code), null);
    } else {
      callback(null, { tokenId: "t-1", profile: "scripted", reason: Reason.REASON_UNSPECIFIED, fields: [], requestId: "" });
    }
  },
  batchDetokenize(_call, callback) {
    callback({ code: status.UNIMPLEMENTED }, null);
  },
};

before(async () => {
  server.addService(DetokenizationServiceService, service);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  target = `127.0.0.1:${port}`;
});

after(() => server.forceShutdown());

async function run(steps: status[]): Promise<unknown> {
  script = steps;
  attempts = 0;
  const client = new DetokenizationClient(target, () => "caller-token", { timeoutMs: 5000 });
  try {
    return await client.detokenize("subject");
  } catch (error) {
    return error;
  } finally {
    client.close();
  }
}

test("two UNAVAILABLE answers, then OK on the third attempt", async () => {
  const result = await run([status.UNAVAILABLE, status.UNAVAILABLE]);
  assert.equal(attempts, 3);
  assert.equal((result as { profile: string }).profile, "scripted");
});

test("bounded: the third UNAVAILABLE is the answer, with its ErrorInfo", async () => {
  const result = await run([status.UNAVAILABLE, status.UNAVAILABLE, status.UNAVAILABLE, status.UNAVAILABLE]);
  assert.equal(attempts, 3);
  assert.ok(result instanceof Unavailable);
  assert.equal(result.reason, "SCRIPTED");
  assert.deepEqual({ ...result.metadata }, { step: "3" });
});

test("a refusal is never retried", async () => {
  const result = await run([status.PERMISSION_DENIED]);
  assert.equal(attempts, 1);
  assert.ok(result instanceof PermissionDenied);
  assert.equal(result.reason, "SCRIPTED");
});

test("a retry that is refused stops there", async () => {
  const result = await run([status.UNAVAILABLE, status.INVALID_ARGUMENT]);
  assert.equal(attempts, 2);
  assert.equal((result as { code: number }).code, status.INVALID_ARGUMENT);
});
