-- Hand entries this consumer holds back to the group at once: mark them idle
-- for `idle` ms, so that the next XAUTOCLAIM of any consumer takes them, and
-- take back the delivery that never ran (they were fetched, not started).
-- KEYS[1] the stream. ARGV[1] the group, ARGV[2] this consumer, ARGV[3] idle
-- (ms), ARGV[4..] ids. Returns how many were handed back (those still ours).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0  -- the stream is gone (deleted, or a server restarted empty)
end
local n = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if pending[1] and pending[1][2] == ARGV[2] then
    local deliveries = math.max(pending[1][4] - 1, 0)
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'IDLE', ARGV[3],
      'RETRYCOUNT', deliveries, 'JUSTID')
    n = n + 1
  end
end
return n
