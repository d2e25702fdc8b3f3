/**
 * Cutting a long list (subject tokens, subjects) into calls a gateway accepts: the same
 * rules as the Python client's `piigate_client.chunking`.
 *
 * One `BatchDetokenize` call takes at most the gateway's `server.max_batch_size` tokens
 * (more is refused with `BATCH_TOO_LARGE`) in one gRPC message of at most
 * `server.max_request_bytes` (a larger one gRPC refuses before piigate sees it, with
 * RESOURCE_EXHAUSTED and no piigate error details). `chunks` cuts by both at once:
 *
 *     for (const chunk of subjectTokenChunks(tokens)) {
 *       results.push(...(await client.detokenizeMany(chunk, { fields: ["email"] })));
 *     }
 *
 * Sizes are protobuf wire bytes: an entry of a `repeated string` field costs a tag byte,
 * its length as a varint and its UTF-8 bytes (protobuf.dev, "Encoding").
 */

/** The gateway's defaults: a full default batch of 8 KiB tokens fits its message limit. */
export const DEFAULT_MAX_BATCH_SIZE = 100;
export const DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024;
/** Room the gateway keeps for a request's fields, reason and adhoc_reason. */
export const REQUEST_ALLOWANCE_BYTES = 16 * 1024;

/** Bytes `text` takes as one entry of a protobuf `repeated string` field. */
export function wireSize(text: string): number {
  const length = Buffer.byteLength(text, "utf8");
  let varint = 1;
  for (let rest = length >>> 7; rest > 0; rest >>>= 7) varint += 1;
  return 1 + varint + length;
}

/**
 * `items` cut into consecutive chunks, in order, each of at most `maxItems` items whose
 * sizes add up to at most `maxBytes`; a chunk is cut only when the next item would not
 * fit. An item too large for any chunk throws a RangeError naming its position (never
 * its content: it may be a token) before anything is returned.
 */
export function chunks<T>(
  items: Iterable<T>,
  maxItems: number,
  maxBytes: number,
  size: (item: T) => number = (item) => wireSize(String(item)),
): T[][] {
  if (!(maxItems >= 1 && maxBytes >= 1)) {
    throw new RangeError("maxItems and maxBytes must be at least 1");
  }
  const cut: T[][] = [];
  let current: T[] = [];
  let used = 0;
  let position = 0;
  for (const item of items) {
    const cost = size(item);
    if (cost > maxBytes) {
      throw new RangeError(`item ${position} takes ${cost} bytes, more than maxBytes (${maxBytes}) on its own`);
    }
    if (current.length > 0 && (current.length === maxItems || used + cost > maxBytes)) {
      cut.push(current);
      current = [];
      used = 0;
    }
    current.push(item);
    used += cost;
    position += 1;
  }
  if (current.length > 0) cut.push(current);
  return cut;
}

/** `subjectTokens` in chunks of one `BatchDetokenize` each, for a gateway with these limits. */
export function subjectTokenChunks(
  subjectTokens: Iterable<string>,
  { maxBatchSize = DEFAULT_MAX_BATCH_SIZE, maxRequestBytes = DEFAULT_MAX_REQUEST_BYTES,
    reserveBytes = REQUEST_ALLOWANCE_BYTES } = {},
): string[][] {
  return chunks(subjectTokens, maxBatchSize, maxRequestBytes - reserveBytes);
}
