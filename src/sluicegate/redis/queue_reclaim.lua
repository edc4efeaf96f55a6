-- Take over entries idle for min_idle ms in any consumer's hands (XAUTOCLAIM);
-- an entry delivered more than max_deliveries times goes to the dead stream
-- instead (acknowledged, deleted, counted as dead).
-- KEYS[1] the stream, KEYS[2] the books, KEYS[3] the dead stream.
-- ARGV: group, consumer, min_idle (ms), cursor, count, max_deliveries.
-- Returns {next cursor, {{id, fields, deliveries}, ...}, dead-lettered now}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'0-0', {}, 0}  -- the stream is gone (deleted, or a server restarted empty)
end
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3],
  ARGV[4], 'COUNT', ARGV[5])
local max = tonumber(ARGV[6])
local taken = {}
local dead = 0
for _, entry in ipairs(claimed[2]) do
  local id = entry[1]
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  local deliveries = 1
  if pending[1] then
    deliveries = pending[1][4]
  end
  if deliveries > max then
    local fields = {'id', id, 'deliveries', deliveries}
    for _, value in ipairs(entry[2]) do
      table.insert(fields, value)
    end
    redis.call('XADD', KEYS[3], '*', unpack(fields))
    redis.call('XACK', KEYS[1], ARGV[1], id)
    redis.call('XDEL', KEYS[1], id)
    dead = dead + 1
  else
    table.insert(taken, {id, entry[2], deliveries})
  end
end
if dead > 0 then
  redis.call('HINCRBY', KEYS[2], 'dead', dead)
end
return {claimed[1], taken, dead}
