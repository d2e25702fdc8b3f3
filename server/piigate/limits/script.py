"""The one Lua script that decides a request against the shared store, atomically.

Redis runs a script alone (no other command interleaves), so the read-check-write of the
token buckets, the window and the one-time marker cannot race between replicas. It does
exactly what `piigate.limits.memory` does, in the same order (`piigate.limits.store`).

    KEYS  1 caller bucket (hash t, u)   2 subject bucket (hash t, u)
          3 distinct window (sorted set: subject hash -> last seen)   4 one-time marker
          5 actor bucket (hash t, u)   6 actor's distinct window
    ARGV  1 now (s)   2 caller rate/s (0: off)   3 caller burst
          4 subject rate/s (0: off)   5 subject burst
          6 distinct cap (0: off)   7 window (s)   8 subject hash
          9 one-time marker lifetime (ms, 0: off)
          10 actor rate/s (0: off)   11 actor burst   12 actor's distinct cap (0: off)
    reply {"ok"} | {"rate", "caller"|"subject"|"actor", retry_after_s} | {"distinct"}
          | {"actor_distinct"} | {"replayed"}

Numbers go out as strings ("%.17g"): Redis would truncate a Lua number reply to an
integer. `now` comes from the gateway's clock: a replica whose clock is behind a bucket's
last update is credited no time (ratelimit.py, invariant 1), so skew between replicas
can only make a limit stricter, by at most the skew times the rate.

Expiry only drops what is lossless to drop: a bucket idle until full again, a window
whose every subject has aged out (plus a second, for clock skew), a marker whose token
can no longer be verified.
"""

from __future__ import annotations

import hashlib

SOURCE = r"""
local now = tonumber(ARGV[1])
local function fmt(x) return string.format('%.17g', x) end

local taken = {}
local worst = nil
-- name, bucket key, rate and burst arguments
for _, limit in ipairs({{'caller', 1, 2, 3}, {'subject', 2, 4, 5}, {'actor', 5, 10, 11}}) do
  local name, key = limit[1], KEYS[limit[2]]
  local rate = tonumber(ARGV[limit[3]])
  if rate > 0 then
    local burst = tonumber(ARGV[limit[4]])
    local state = redis.call('HMGET', key, 't', 'u')
    local tokens, updated = tonumber(state[1]), tonumber(state[2])
    if tokens == nil or updated == nil then
      tokens, updated = burst, now
    elseif now > updated then
      tokens = math.min(burst, tokens + (now - updated) * rate)
      updated = now
    end
    if tokens < 1 then
      local wait = (1 - tokens) / rate
      if worst == nil or wait > worst[1] or (wait == worst[1] and name > worst[2]) then
        worst = {wait, name}
      end
    end
    taken[#taken + 1] = {key, tokens - 1, updated, math.ceil(burst / rate * 1000) + 1000}
  end
end
if worst ~= nil then
  return {'rate', worst[2], fmt(worst[1])}
end
for _, b in ipairs(taken) do
  redis.call('HSET', b[1], 't', fmt(b[2]), 'u', fmt(b[3]))
  redis.call('PEXPIRE', b[1], b[4])
end

-- window key, cap argument, refusal
for _, limit in ipairs({{3, 6, 'distinct'}, {6, 12, 'actor_distinct'}}) do
  local key, cap = KEYS[limit[1]], tonumber(ARGV[limit[2]])
  if cap > 0 then
    local window = tonumber(ARGV[7])
    local member = ARGV[8]
    redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now - window))
    local seen = redis.call('ZSCORE', key, member)
    if seen then
      if now > tonumber(seen) then redis.call('ZADD', key, fmt(now), member) end
    elseif redis.call('ZCARD', key) < cap then
      redis.call('ZADD', key, fmt(now), member)
    else
      return {limit[3]}
    end
    redis.call('PEXPIRE', key, math.ceil(window * 1000) + 1000)
  end
end

local lifetime = tonumber(ARGV[9])
if lifetime > 0 then
  if not redis.call('SET', KEYS[4], '1', 'NX', 'PX', lifetime) then
    return {'replayed'}
  end
end
return {'ok'}
"""

SHA1 = hashlib.sha1(SOURCE.encode(), usedforsecurity=False).hexdigest()
