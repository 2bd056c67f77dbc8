-- One run per scope at a time, with coalesced follow-ups. One atomic decision per call.
-- Returns 1 or 0 (``holder``: the pending marker's owner or nil); what that means for each
-- verb is in single_flight.py.
--
-- The pending marker holds the owner (job id) of the queued or running run it stands for, so a
-- caller can ask the durable ledger whether that run has in fact ended. It lives only as long
-- as that run may still start: the queue bound, extended by the countdown when the run is
-- re-published, refreshed while the run holds its lease. The dirty flag lives at least as long.
--
-- An owner may be a token ``<run>/<execution>`` (a sync: ``<job id>/<Celery task id>``): the
-- lease then names the one execution (message) that holds it, so a stale message of the same
-- run can neither clear the dirty flag nor keep the lease; the pending marker names the run.

local pending = KEYS[1]                -- marker: a run is queued or running; holds its owner
local lease = KEYS[2]                  -- the run lease, holding its owner's token
local dirty = KEYS[3]                  -- flag: requests arrived that the pending run may miss
local verb = ARGV[1]                   -- request | take_over | acquire | take | begin | drop |
                                       -- renew | requeue | release | cancel | holder
local owner = ARGV[2]                  -- owner token of the run the call is about
local lease_ms = tonumber(ARGV[3])     -- how long a lease lasts unless renewed, ms
local pending_ms = tonumber(ARGV[4])   -- queue bound: how long a pending marker lives, ms
local resume = ARGV[5] == '1'          -- acquire: a continuation of a run already under way
local other = ARGV[6]                  -- take_over: the stale owner; release: the follow-up's;
                                       -- requeue: the next execution's token (or '')
local delay_ms = tonumber(ARGV[7])     -- requeue: the re-published run's countdown, ms
local dirty_ms = tonumber(ARGV[8])     -- how long a dirty flag lives at least, ms

-- Name ``value`` as the pending run for ``ttl_ms``; the dirty flag must not die before it
-- (it may outlive it: a run still alive after its marker lapsed releases it, see ``release``).
local function mark_pending(value, ttl_ms)
  redis.call('SET', pending, value, 'PX', ttl_ms)
  local left = redis.call('PTTL', dirty)
  if left >= 0 and left < ttl_ms then
    redis.call('PEXPIRE', dirty, ttl_ms)
  end
end

-- The run part of an owner token (the whole owner when it has no ``/``).
local function run_of(token)
  return string.match(token, '^([^/]*)/') or token
end

local function mark_dirty()
  local ttl = redis.call('PTTL', pending)
  redis.call('SET', dirty, '1', 'PX', math.max(ttl, pending_ms, dirty_ms))
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
elseif verb == 'acquire' or verb == 'take' then
  local holder = redis.call('GET', lease)
  if holder and holder ~= owner then
    if run_of(holder) == run_of(owner) then
      -- Another execution of the same run: which one may run is the ledger's to say, so
      -- ``acquire`` touches nothing (2); ``take`` is the caller the ledger named: it takes over.
      if verb == 'acquire' then
        return 2
      end
    elseif verb == 'take' then
      return 0
    else
      -- Someone runs already: it will see the dirty flag when it finishes.
      mark_pending(run_of(holder), math.max(redis.call('PTTL', lease), pending_ms))
      mark_dirty()
      return 0
    end
  end
  redis.call('SET', lease, owner, 'PX', lease_ms)
  mark_pending(run_of(owner), pending_ms)
  if not resume and verb == 'acquire' then
    -- A fresh run reads everything that arrived before it started: those requests are covered.
    -- A continuation reads on from where its run stopped, so requests stay pending.
    redis.call('DEL', dirty)
  end
  return 1
elseif verb == 'begin' then
  -- A fresh run the ledger confirmed while holding the lease starts reading now: requests so
  -- far are covered. Only while ``owner`` still holds the lease (a stale message never does).
  if redis.call('GET', lease) ~= owner then
    return 0
  end
  redis.call('DEL', dirty)
  return 1
elseif verb == 'drop' then
  -- An execution the ledger says is stale gives back a lease it took; nothing else changes.
  if redis.call('GET', lease) == owner then
    redis.call('DEL', lease)
  end
  return 1
elseif verb == 'renew' then
  if redis.call('GET', lease) ~= owner then
    return 0
  end
  redis.call('PEXPIRE', lease, lease_ms)
  mark_pending(run_of(owner), pending_ms)
  return 1
elseif verb == 'requeue' then
  -- ``owner`` is re-published to start after ``delay_ms``: it stays pending that much longer.
  -- With ``other`` (the next execution's token), a lease ``owner`` holds passes to it.
  if other ~= '' and redis.call('GET', lease) == owner then
    redis.call('SET', lease, other, 'PX', lease_ms + delay_ms)
  end
  mark_pending(run_of(owner), delay_ms + pending_ms)
  return 1
elseif verb == 'release' then
  local run = run_of(owner)
  local holder = redis.call('GET', lease)
  if holder and run_of(holder) == run then
    redis.call('DEL', lease)
  end
  local current = redis.call('GET', pending)
  if current and current ~= run then
    -- Released already, to this very follow-up (the caller's earlier attempt failed after it):
    -- the same answer again, so the follow-up is still created exactly once. ('1', the
    -- anonymous owner, names no particular run.)
    if current == other and other ~= '1' then
      return 1
    end
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
