-- One circuit's every decision, atomic across all workers and hosts (one round trip each).
-- Every input is bound to a name here, at the top; nothing below reads KEYS or ARGV.
-- Times are epoch seconds (floats).
local h = KEYS[1]        -- state hash: state, counters, times, identity, dirty flag
local win = KEYS[2]      -- sliding window: a list when count-based, a zset when time-based
local wfail = KEYS[3]    -- failures of a time-based window (zset)
local trials = KEYS[4]   -- half-open trial reservations (zset, score = expiry)
local all_keys = {h, win, wfail, trials}

local op = ARGV[1]                          -- allow|success|failure|ignored|reset|snapshot|peek
local now = tonumber(ARGV[2])               -- the caller's clock
local rate_threshold = tonumber(ARGV[3])    -- failure-rate threshold, %; 0 = off
local window_type = ARGV[4]                 -- count | time
local window_size = tonumber(ARGV[5])       -- calls, or seconds
local min_calls = tonumber(ARGV[6])         -- calls before the failure rate counts
local consecutive_threshold = tonumber(ARGV[7]) -- consecutive failures that trip; 0 = off
local base_wait = tonumber(ARGV[8])         -- first open wait, s
local multiplier = tonumber(ARGV[9])        -- open-wait growth per repeated trip
local max_wait = tonumber(ARGV[10])         -- longest open wait, s
local permitted = tonumber(ARGV[11])        -- trial calls permitted in half-open
local to_close = tonumber(ARGV[12])         -- trial successes that close the circuit
local trial_timeout = tonumber(ARGV[13])    -- s a trial reservation lives
local reset_after = tonumber(ARGV[14])      -- s closed that start the wait growth over
local ttl = tonumber(ARGV[15])              -- s an untouched circuit's keys live
local token = ARGV[16]                      -- the trial token being settled; '' = none
local reason = ARGV[17]                     -- the failure's reason; '' = none
local store_id = ARGV[18]                   -- '' for a business-wide circuit
local business_id = ARGV[19]                -- '' when unknown
local circuit_name = ARGV[20]
local brief = ARGV[21] == '1'               -- reply without the hash unless a transition

-- Returns (decoded by states.parse_reply): allowed, retry_after_s, trial_token,
-- previous_state ('' = no transition), window_calls, window_failures, then the state
-- hash's field/value pairs ('state' first; only that pair when brief and no transition).

local state = redis.call('HGET', h, 'state') or 'closed'
local previous = ''
local allowed, retry_after, granted = 0, 0, ''

local function num(field)
  return tonumber(redis.call('HGET', h, field) or '0') or 0
end

local function window_counts()
  if window_type == 'time' then
    redis.call('ZREMRANGEBYSCORE', win, '-inf', now - window_size)
    redis.call('ZREMRANGEBYSCORE', wfail, '-inf', now - window_size)
    return redis.call('ZCARD', win), redis.call('ZCARD', wfail)
  end
  return redis.call('LLEN', win), num('count_window_failures')
end

local function window_push(failed)
  if window_type == 'time' then
    local id = redis.call('HINCRBY', h, 'window_seq', 1)
    redis.call('ZADD', win, now, id)
    if failed then redis.call('ZADD', wfail, now, id) end
    return
  end
  redis.call('LPUSH', win, failed and '1' or '0')
  if failed then redis.call('HINCRBY', h, 'count_window_failures', 1) end
  -- A loop, not one pop: the configured size may have shrunk since the last call.
  while redis.call('LLEN', win) > window_size do
    if redis.call('RPOP', win) == '1' then redis.call('HINCRBY', h, 'count_window_failures', -1) end
  end
end

local function set_state(new_state)
  if previous == '' then previous = state end
  state = new_state
  redis.call('HSET', h, 'state', new_state, 'state_changed_at', now)
end

local function trip()
  local streak = num('open_streak')
  local closed_at = tonumber(redis.call('HGET', h, 'closed_at') or '')
  -- Waits grow only while the circuit flaps; a long healthy spell starts them over.
  if state == 'closed' and closed_at and now - closed_at >= reset_after then streak = 0 end
  streak = streak + 1
  local wait = math.min(base_wait * multiplier ^ (streak - 1), max_wait)
  redis.call('HSET', h, 'open_streak', streak, 'opened_at', now, 'next_attempt_at', now + wait,
    'half_open_successes', 0)
  redis.call('HINCRBY', h, 'trip_count', 1)
  redis.call('DEL', trials)
  set_state('open')
end

local function close()
  redis.call('DEL', trials, win, wfail)
  redis.call('HSET', h, 'consecutive_failures', 0, 'count_window_failures', 0,
    'half_open_successes', 0, 'closed_at', now, 'next_attempt_at', '')
  set_state('closed')
end

local function live_trials()
  redis.call('ZREMRANGEBYSCORE', trials, '-inf', now)
  return redis.call('ZCARD', trials)
end

local function allow()
  if state == 'open' then
    local next_at = num('next_attempt_at')
    if now < next_at then
      retry_after = next_at - now
      redis.call('HINCRBY', h, 'not_permitted_calls', 1)
      return
    end
    redis.call('DEL', trials)
    redis.call('HSET', h, 'half_open_successes', 0, 'half_open_calls', 0)
    set_state('half_open')
  end
  if state == 'half_open' then
    if live_trials() + num('half_open_successes') >= permitted then
      -- Trials report back well before their reservations expire; poll no slower than that.
      local first = redis.call('ZRANGE', trials, 0, 0, 'WITHSCORES')
      retry_after = first[2] and math.min(tonumber(first[2]) - now, base_wait) or base_wait
      redis.call('HINCRBY', h, 'not_permitted_calls', 1)
      return
    end
    granted = tostring(redis.call('HINCRBY', h, 'trial_seq', 1))
    redis.call('ZADD', trials, now + trial_timeout, granted)
    redis.call('HINCRBY', h, 'half_open_calls', 1)
  end
  allowed = 1
end

local function rate_exceeded()
  local calls, failures = window_counts()
  return rate_threshold > 0 and calls >= min_calls and failures * 100 >= rate_threshold * calls
end

local function take_trial()
  if state ~= 'half_open' then return false end
  if token ~= '' then return redis.call('ZREM', trials, token) == 1 end
  -- Without a token, the oldest reservation stands for this outcome.
  return #redis.call('ZPOPMIN', trials) > 0
end

local function record()
  local trial = take_trial()
  redis.call('HINCRBY', h, 'total_calls', 1)
  if op == 'ignored' then
    redis.call('HINCRBY', h, 'ignored_calls', 1)
  elseif op == 'success' then
    redis.call('HINCRBY', h, 'success_count', 1)
    redis.call('HSET', h, 'last_success_at', now)
    if state == 'closed' then
      redis.call('HSET', h, 'consecutive_failures', 0)
      window_push(false)
      -- As in resilience4j, a success can complete the minimum number of calls.
      if rate_exceeded() then trip() end
    elseif trial and redis.call('HINCRBY', h, 'half_open_successes', 1) >= to_close then
      close()
    end
  else
    redis.call('HINCRBY', h, 'total_failures', 1)
    redis.call('HSET', h, 'last_failure_at', now, 'last_failure_reason', reason)
    local streak = redis.call('HINCRBY', h, 'consecutive_failures', 1)
    if state == 'closed' then
      window_push(true)
      local by_count = consecutive_threshold > 0 and streak >= consecutive_threshold
      if by_count or rate_exceeded() then trip() end
    elseif trial then
      trip()
    end
  end
end

local function reset()
  if state ~= 'closed' then close() end
  redis.call('DEL', trials, win, wfail)
  redis.call('HSET', h, 'open_streak', 0, 'consecutive_failures', 0, 'count_window_failures', 0)
end

local function touch()
  redis.call('HSET', h, 'store_id', store_id, 'business_id', business_id,
    'circuit_name', circuit_name, 'dirty', 1)
  for _, k in ipairs(all_keys) do redis.call('EXPIRE', k, ttl) end
end

if op == 'allow' then
  allow()
  if previous ~= '' or allowed == 0 or granted ~= '' then touch() end
elseif op == 'reset' then
  reset()
  touch()
elseif op == 'snapshot' then
  if redis.call('EXISTS', h) == 1 then redis.call('HSET', h, 'dirty', 0) end
elseif op ~= 'peek' then
  record()
  touch()
end

local calls, failures = window_counts()
local reply = {allowed, tostring(retry_after), granted, previous, calls, failures, 'state', state}
-- The hot path (a decision, an outcome) needs no counters back unless the state changed.
if not brief or previous ~= '' then
  for _, v in ipairs(redis.call('HGETALL', h)) do reply[#reply + 1] = v end
end
return reply
