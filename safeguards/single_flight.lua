-- One run per scope at a time, with coalesced follow-ups. One atomic decision per call.
-- Returns 1 or 0 (``holder``: the pending marker's owner or nil); what that means for each
-- verb is in single_flight.py.
--
-- The pending marker holds the owner (job id) of the queued or running run it stands for, so a
-- caller can ask the durable ledger whether that run has in fact ended. It lives only as long
-- as that run may still start: the queue bound, extended by the countdown when the run is
-- re-published, refreshed while the run holds its lease. The dirty flag lives at least as long.

local pending = KEYS[1]                -- marker: a run is queued or running; holds its owner
local lease = KEYS[2]                  -- the run lease, holding its owner's token
local dirty = KEYS[3]                  -- flag: requests arrived that the pending run may miss
local verb = ARGV[1]                   -- request | take_over | acquire | renew | requeue |
                                       -- release | cancel | holder
local owner = ARGV[2]                  -- owner token of the run the call is about
local lease_ms = tonumber(ARGV[3])     -- how long a lease lasts unless renewed, ms
local pending_ms = tonumber(ARGV[4])   -- queue bound: how long a pending marker lives, ms
local resume = ARGV[5] == '1'          -- acquire: a continuation of a run already under way
local other = ARGV[6]                  -- take_over: the stale owner; release: the follow-up's
local delay_ms = tonumber(ARGV[7])     -- requeue: the re-published run's countdown, ms

-- Name ``value`` as the pending run for ``ttl_ms``; the dirty flag must not die before it.
local function mark_pending(value, ttl_ms)
  redis.call('SET', pending, value, 'PX', ttl_ms)
  redis.call('PEXPIRE', dirty, ttl_ms)
end

local function mark_dirty()
  local ttl = redis.call('PTTL', pending)
  redis.call('SET', dirty, '1', 'PX', math.max(ttl, pending_ms))
end

if verb == 'request' then
  -- Nothing queued or running: the caller enqueues ``owner``. Otherwise one more is wanted.
  if redis.call('SET', pending, owner, 'NX', 'PX', pending_ms) then
    return 1
  end
  mark_dirty()
  return 0
elseif verb == 'take_over' then
  -- The ledger says the marker's run has ended (or there is no marker): ``owner`` replaces it.
  local current = redis.call('GET', pending)
  if (not current and other == '') or current == other then
    redis.call('SET', pending, owner, 'PX', pending_ms)
    return 1
  end
  return 0
elseif verb == 'acquire' then
  local holder = redis.call('GET', lease)
  if holder and holder ~= owner then
    -- Someone runs already: it will see the dirty flag when it finishes.
    mark_pending(holder, math.max(redis.call('PTTL', lease), pending_ms))
    mark_dirty()
    return 0
  end
  redis.call('SET', lease, owner, 'PX', lease_ms)
  mark_pending(owner, pending_ms)
  if not resume then
    -- A fresh run reads everything that arrived before it started: those requests are covered.
    -- A continuation reads on from where its run stopped, so requests stay pending.
    redis.call('DEL', dirty)
  end
  return 1
elseif verb == 'renew' then
  if redis.call('GET', lease) ~= owner then
    return 0
  end
  redis.call('PEXPIRE', lease, lease_ms)
  mark_pending(owner, pending_ms)
  return 1
elseif verb == 'requeue' then
  -- ``owner`` is re-published to start after ``delay_ms``: it stays pending that much longer.
  mark_pending(owner, delay_ms + pending_ms)
  return 1
elseif verb == 'release' then
  if redis.call('GET', lease) == owner then
    redis.call('DEL', lease)
  end
  local current = redis.call('GET', pending)
  if current and current ~= owner then
    -- A newer run took the marker over; it starts after every request so far and covers them.
    return 0
  end
  if redis.call('DEL', dirty) == 1 then
    -- The marker now names the follow-up run the caller enqueues, exactly one.
    mark_pending(other, pending_ms)
    return 1
  end
  redis.call('DEL', pending)
  return 0
elseif verb == 'cancel' then
  -- The caller could not enqueue the run it was told to: nothing is pending after all.
  if owner == '' or redis.call('GET', pending) == owner then
    redis.call('DEL', pending)
  end
  return 1
elseif verb == 'holder' then
  return redis.call('GET', pending)
end
return redis.error_reply('unknown verb ' .. tostring(verb))
