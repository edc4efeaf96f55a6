-- sluicegate.redis.RedisRateLimiter: one atomic step of a shared token bucket
-- (GCRA), on the server's clock.
--
-- KEYS[1]  {key}:state       hash: tat (theoretical arrival time), held (until)
-- KEYS[2]  {key}:call:<id>   "<seq> <time>": the last call of limiter <id> that
--                            changed the bucket, so that a repeat of it (coredis
--                            retries a call whose reply was lost) changes nothing
-- ARGV     op ("take" | "give"), seq, tokens, interval (microseconds per
--          token), burst, hold (microseconds from now to hold for; 0: none)
--
-- Times are whole microseconds on the server's clock (TIME). The bucket is full
-- when tat <= now; it holds burst - (tat - now) / interval tokens otherwise. A
-- hold until `held` leaves it empty then: tat >= held + burst * interval.
-- tat moves by whole microseconds, rounded up: at today's epoch a double holds
-- microseconds only to a quarter, and adding a fractional interval to it would
-- round the same way at every grant, so that tat fell behind (and the bound was
-- overstepped) by a little more with each one.
--
-- Reply: {granted (1 or 0), wait (microseconds until a retry may succeed;
-- 0 if granted), now (the server's time of this call, or of the grant that
-- this call repeats)}.

local op = ARGV[1]
local seq = tonumber(ARGV[2])
local tokens = tonumber(ARGV[3])
local interval = tonumber(ARGV[4])
local burst = tonumber(ARGV[5])
local hold = tonumber(ARGV[6])

-- Keep the call record long enough to catch any retry of this call.
local CALL_RECORD_MS = 60000

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

local last = redis.call('GET', KEYS[2])
if last then
  local last_seq, last_time = string.match(last, '^(%d+) (%d+)$')
  if last_seq and tonumber(last_seq) >= seq then
    return {1, 0, tonumber(last_time)}
  end
end

local state = redis.call('HMGET', KEYS[1], 'tat', 'held')
local tat = tonumber(state[1]) or now
local held = tonumber(state[2]) or 0
if tat < now then
  tat = now
end

local function save(new_tat)
  -- The state means nothing once the bucket is full and no hold is on: let it
  -- expire then (a missing state is a full bucket).
  local last_use = math.max(new_tat, held)
  redis.call('HSET', KEYS[1], 'tat', string.format('%.17g', new_tat),
             'held', string.format('%.17g', held))
  redis.call('PEXPIRE', KEYS[1], math.ceil((last_use - now) / 1000) + 1000)
  redis.call('SET', KEYS[2], string.format('%d %.0f', seq, now), 'PX',
             CALL_RECORD_MS)
end

-- The earliest tat may go back to: now (a full bucket), or while held, the
-- hold's end plus a full bucket's worth (empty at the end of the hold).
local least = now
if held > now then
  least = held + math.ceil(burst * interval)
end

if hold > 0 and now + hold > held then
  -- Grants resume at the rate when the hold ends, not in a burst: the bucket
  -- is empty then, whatever it held before.
  held = now + hold
  least = held + math.ceil(burst * interval)
  tat = math.max(tat, least)
  redis.call('HSET', KEYS[1], 'tat', string.format('%.17g', tat),
             'held', string.format('%.17g', held))
  redis.call('PEXPIRE', KEYS[1], math.ceil((tat - now) / 1000) + 1000)
end

if op == 'give' then
  -- A granted token nobody used: the bucket gets it back (a full bucket stays
  -- full, an empty one at the end of a hold stays empty), as if it had never
  -- been taken.
  save(math.max(tat - math.ceil(tokens * interval), least))
  return {1, 0, now}
end

-- How far ahead of now the bucket's tat is (exact: whole microseconds), and
-- the tokens' cost, rounded up to whole microseconds for tat to move by (it
-- only errs on the safe side). The test itself is on small numbers: exact.
local ahead = tat - now
local step = math.ceil(tokens * interval)

local wait = held - now
local over = ahead + tokens * interval - burst * interval
if over > wait then
  wait = over
end
if wait > 0 then
  return {0, math.ceil(wait), now}
end
save(tat + step)
return {1, 0, now}
