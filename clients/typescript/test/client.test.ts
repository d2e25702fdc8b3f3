/**
 * The TypeScript client against a real piigate: run by tests/e2e/test_typescript_client.py,
 * which starts the stack (local vault, dev issuer, gateway) and passes the target, caller
 * tokens and users' subject tokens in PIIGATE_E2E (JSON). Nothing here prints a token.
 */

import assert from "node:assert/strict";
import { after, describe, test } from "node:test";

import {
  ClientCredentials,
  DeadlineExceeded,
  Detokenized,
  DetokenizationClient,
  PermissionDenied,
  TokenEndpointError,
  Unauthenticated,
  type ClientAuthMethod,
} from "../src/index";

interface Setup {
  target: string;
  tokenUrl: string;
  audience: string;
  client: { id: string; secret: string };
  callers: { fhir: string; support: string; billing: string };
  users: { aliceSupport: string; bobSupport: string; carolFhir: string };
  expect: { aliceSsnMasked: string; bobSsnMasked: string; carolUserId: string };
}

const raw = process.env.PIIGATE_E2E;
if (!raw) {
  throw new Error("PIIGATE_E2E is unset: run through tests/e2e/test_typescript_client.py");
}
const setup = JSON.parse(raw) as Setup;
const clients: DetokenizationClient[] = [];

function caller(token: string, timeoutMs = 5000): DetokenizationClient {
  const client = new DetokenizationClient(setup.target, () => token, { timeoutMs });
  clients.push(client);
  return client;
}

after(() => clients.forEach((c) => c.close()));

describe("disclosure", () => {
  test("the FHIR profile discloses user_id raw", async () => {
    const result = await caller(setup.callers.fhir).detokenize(setup.users.carolFhir);
    assert.equal(result.profile, "smart_on_fhir");
    assert.equal(result.reason, "AppFunctionality");
    assert.deepEqual(result.get("user_id"), { name: "user_id", value: setup.expect.carolUserId, disclosure: "raw" });
    assert.deepEqual(result.fields.map((f) => f.name), ["user_id"]);
  });

  test("the support profile discloses masked values and redacts the rest", async () => {
    const result = await caller(setup.callers.support).detokenize(setup.users.aliceSupport, {
      reason: "AccountManagement",
    });
    assert.equal(result.profile, "support");
    assert.deepEqual(result.get("ssn"), { name: "ssn", value: setup.expect.aliceSsnMasked, disclosure: "masked" });
    assert.equal(result.get("email")?.disclosure, "masked");
    assert.deepEqual(result.get("user_id"), { name: "user_id", value: "", disclosure: "redacted" });
    assert.ok(!JSON.stringify(result).includes(setup.expect.aliceSsnMasked), "toJSON leaks no value");
    assert.match(result.requestId, /^[0-9a-f]{32}$/, "the audit event's request id comes back");
  });

  test("a field subset is honoured", async () => {
    const result = await caller(setup.callers.support).detokenize(setup.users.aliceSupport, { fields: ["ssn"] });
    assert.deepEqual(result.fields.map((f) => f.name), ["ssn"]);
  });
});

describe("refusals decode to their ErrorInfo", () => {
  test("a caller no profile lists: CALLER_WITHOUT_PROFILE", async () => {
    await assert.rejects(caller(setup.callers.billing).detokenize(setup.users.aliceSupport), (error) => {
      assert.ok(error instanceof PermissionDenied);
      assert.equal(error.code, 7);
      assert.equal(error.reason, "CALLER_WITHOUT_PROFILE");
      return true;
    });
  });

  test("a subject token for another audience: AUDIENCE_NOT_ACCEPTED with its profile", async () => {
    await assert.rejects(caller(setup.callers.support).detokenize(setup.users.carolFhir), (error) => {
      assert.ok(error instanceof PermissionDenied);
      assert.equal(error.reason, "AUDIENCE_NOT_ACCEPTED");
      const { request_id: requestId, ...rest } = error.metadata;
      assert.deepEqual(rest, { profile: "support" });
      assert.match(requestId ?? "", /^[0-9a-f]{32}$/);
      assert.equal(error.requestId, requestId);
      return true;
    });
  });

  test("a malformed caller credential: UNAUTHENTICATED with token_role caller", async () => {
    await assert.rejects(caller("not-a-jwt").detokenize(setup.users.aliceSupport), (error) => {
      assert.ok(error instanceof Unauthenticated);
      assert.equal(error.reason, "TOKEN_MALFORMED");
      assert.equal(error.metadata.token_role, "caller");
      return true;
    });
  });

  test("an unknown reason name is refused before any call", async () => {
    const client = caller(setup.callers.support);
    // @ts-expect-error: not a ReasonName
    await assert.rejects(client.detokenize(setup.users.aliceSupport, { reason: "Curiosity" }), TypeError);
  });
});

test("a batch answers per item, in order", async () => {
  const results = await caller(setup.callers.support).detokenizeMany(
    [setup.users.aliceSupport, setup.users.bobSupport, setup.users.carolFhir, "not-a-jwt"],
    { fields: ["ssn"] },
  );
  assert.deepEqual(results.map((r) => r.constructor.name), [
    "Detokenized", "Detokenized", "PermissionDenied", "Unauthenticated",
  ]);
  const [alice, bob, carol, garbage] = results;
  assert.ok(alice instanceof Detokenized && bob instanceof Detokenized);
  assert.equal(alice.get("ssn")?.value, setup.expect.aliceSsnMasked);
  assert.equal(bob.get("ssn")?.value, setup.expect.bobSsnMasked);
  assert.ok(carol instanceof PermissionDenied);
  assert.equal(carol.reason, "AUDIENCE_NOT_ACCEPTED");
  assert.ok(garbage instanceof Unauthenticated);
  assert.equal(garbage.reason, "TOKEN_MALFORMED");
  assert.equal(garbage.metadata.token_role, "subject");
});

test("a deadline that expires rejects with DEADLINE_EXCEEDED", async () => {
  const client = caller(setup.callers.support);
  await assert.rejects(client.detokenize(setup.users.aliceSupport, { timeoutMs: 1 }), (error) => {
    assert.ok(error instanceof DeadlineExceeded);
    assert.equal(error.code, 4);
    assert.equal(error.reason, "DEADLINE_EXCEEDED");
    return true;
  });
});

describe("client credentials against the dev issuer's token endpoint", () => {
  for (const authMethod of ["client_secret_basic", "client_secret_post"] as ClientAuthMethod[]) {
    test(`${authMethod}: the fetched token authenticates a call`, async () => {
      const credential = new ClientCredentials({
        tokenUrl: setup.tokenUrl, clientId: setup.client.id, clientSecret: setup.client.secret,
        audience: setup.audience, authMethod,
      });
      const client = new DetokenizationClient(setup.target, credential, { timeoutMs: 5000 });
      clients.push(client);
      const result = await client.detokenize(setup.users.aliceSupport);
      assert.equal(result.profile, "support");
      assert.ok(!JSON.stringify(credential).includes(setup.client.secret));
    });
  }

  test("the token is cached, shared by concurrent calls, and refreshed before expiry", async () => {
    let fetches = 0;
    let now = 1_000_000;
    const credential = new ClientCredentials({
      tokenUrl: setup.tokenUrl, clientId: setup.client.id, clientSecret: setup.client.secret,
      audience: setup.audience, now: () => now,
      fetch: (input, init) => {
        fetches += 1;
        return fetch(input, init);
      },
    });
    const [first, second] = await Promise.all([credential.token(), credential.token()]);
    assert.equal(first, second);
    assert.equal(fetches, 1);
    now += 60_000;
    assert.equal(await credential.token(), first);
    assert.equal(fetches, 1);
    // The dev issuer's client tokens live a day: 30 s before that, a new one is fetched.
    now += 86_400_000 - 30_000 - 60_000;
    await credential.token();
    assert.equal(fetches, 2);
  });

  test("a wrong secret is refused with the endpoint's OAuth error", async () => {
    const credential = new ClientCredentials({
      tokenUrl: setup.tokenUrl, clientId: setup.client.id, clientSecret: "wrong",
      audience: setup.audience, authMethod: "client_secret_post",
    });
    await assert.rejects(credential.token(), (error) => {
      assert.ok(error instanceof TokenEndpointError);
      assert.equal(error.status, 401);
      assert.equal(error.error, "invalid_client");
      return true;
    });
  });
});
