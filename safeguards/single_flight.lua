-- One run per scope at a time, with coalesced follow-ups. One atomic decision per call.
-- Returns 1 or 0; what that means for each verb is in single_flight.py.

local pending = KEYS[1]               -- marker: a run is queued or running
local lease = KEYS[2]                 -- the run lease, holding its owner's token
local dirty = KEYS[3]                 -- flag: requests arrived while a run was pending
local verb = ARGV[1]                  -- request | acquire | renew | release | cancel
local owner = ARGV[2]                 -- owner token (acquire, renew, release); else ''
local lease_ms = tonumber(ARGV[3])    -- how long a lease lasts unless renewed, ms
local pending_ms = tonumber(ARGV[4])  -- how long the pending marker and dirty flag live, ms

if verb == 'request' then
  -- Nothing queued or running: the caller enqueues. Otherwise remember one more is wanted.
  if redis.call('SET', pending, '1', 'NX', 'PX', pending_ms) then
    return 1
  end
  redis.call('SET', dirty, '1', 'PX', pending_ms)
  return 0
elseif verb == 'acquire' then
  local holder = redis.call('GET', lease)
  if holder and holder ~= owner then
    -- Someone runs already: it will see the dirty flag when it finishes.
    redis.call('SET', dirty, '1', 'PX', pending_ms)
    return 0
  end
  redis.call('SET', lease, owner, 'PX', lease_ms)
  redis.call('SET', pending, '1', 'PX', pending_ms)
  -- Changes that arrived before this run started are covered by it.
  redis.call('DEL', dirty)
  return 1
elseif verb == 'renew' then
  if redis.call('GET', lease) ~= owner then
    return 0
  end
  redis.call('PEXPIRE', lease, lease_ms)
  redis.call('PEXPIRE', pending, pending_ms)
  return 1
elseif verb == 'release' then
  if redis.call('GET', lease) == owner then
    redis.call('DEL', lease)
  end
  if redis.call('DEL', dirty) == 1 then
    -- Keep the pending marker: the caller enqueues exactly one follow-up run.
    redis.call('SET', pending, '1', 'PX', pending_ms)
    return 1
  end
  redis.call('DEL', pending)
  return 0
elseif verb == 'cancel' then
  -- The caller could not enqueue the run it was told to: nothing is pending after all.
  redis.call('DEL', pending)
  return 1
end
return redis.error_reply('unknown verb ' .. tostring(verb))
