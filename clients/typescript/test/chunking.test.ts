/** chunks / subjectTokenChunks: cut by count and by protobuf wire bytes (no server). */

import assert from "node:assert/strict";
import { test } from "node:test";

import { chunks, subjectTokenChunks, wireSize } from "../src/index";
import { BatchDetokenizeRequest } from "../src/gen/piigate/v1/detokenization";

function encoded(tokens: string[]): number {
  return BatchDetokenizeRequest.encode(BatchDetokenizeRequest.fromPartial({ subjectTokens: tokens })).finish().length;
}

test("wireSize is what protobuf encodes", () => {
  for (const length of [0, 1, 127, 128, 8192, 16383, 16384, 70000]) {
    const token = "a".repeat(length);
    assert.equal(wireSize(token), encoded([token]), `length ${length}`);
  }
  assert.equal(wireSize("é".repeat(10)), 22);
});

test("cut by count, in order, every item once", () => {
  const items = Array.from({ length: 250 }, (_, i) => String(i));
  const cut = chunks(items, 100, 1e9);
  assert.deepEqual(cut.map((c) => c.length), [100, 100, 50]);
  assert.deepEqual(cut.flat(), items);
});

test("cut by bytes before the item that would not fit", () => {
  const items = Array.from({ length: 10 }, () => "x".repeat(97)); // 100 wire bytes each
  assert.deepEqual(chunks(items, 100, 350).map((c) => c.length), [3, 3, 3, 1]);
  assert.deepEqual(chunks([5, 5, 5, 1], 10, 10, (n) => n), [[5, 5], [5, 1]]);
});

test("an item too large alone is refused by position, not content", () => {
  assert.throws(() => chunks(["ok", "secret".repeat(100)], 10, 100),
    (error: Error) => error instanceof RangeError && error.message.startsWith("item 1 takes")
      && !error.message.includes("secret"));
  assert.throws(() => chunks(["a"], 0, 10), RangeError);
});

test("the default batch of 8 KiB tokens fits the gateway's default message limit", () => {
  const cut = subjectTokenChunks(Array.from({ length: 230 }, () => "t".repeat(8192)));
  assert.deepEqual(cut.map((c) => c.length), [100, 100, 30]);
  assert.ok(encoded(cut[0] ?? []) <= 1024 * 1024 - 16 * 1024);
  const small = subjectTokenChunks(Array.from({ length: 20 }, () => "t".repeat(8000)),
    { maxBatchSize: 100, maxRequestBytes: 64 * 1024 });
  assert.deepEqual(small.map((c) => c.length), [6, 6, 6, 2]);
});
