-- Reset the idle time of entries this consumer still holds, so that no other
-- consumer reclaims an item that a live worker is still working on. An entry
-- another consumer has taken over meanwhile is left to it.
-- KEYS[1] the stream. ARGV[1] the group, ARGV[2] this consumer, ARGV[3..] ids.
-- Returns how many are still held.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0  -- the stream is gone (deleted, or a server restarted empty)
end
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if pending[1] and pending[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
    n = n + 1
  end
end
return n
