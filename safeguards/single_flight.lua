-- One run per scope at a time, with coalesced follow-ups. One atomic decision per call.
-- KEYS[1] pending marker (a run is queued or running), KEYS[2] run lease, KEYS[3] dirty flag
-- ARGV[1] verb: request | acquire | renew | release | cancel
-- ARGV[2] owner token (acquire/renew/release), ARGV[3] lease ms, ARGV[4] pending ttl ms
local pending, lease, dirty = KEYS[1], KEYS[2], KEYS[3]
local verb, owner = ARGV[1], ARGV[2]
local lease_ms, pending_ms = tonumber(ARGV[3]), tonumber(ARGV[4])

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
