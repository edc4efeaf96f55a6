-- Acknowledge entries and delete them from the stream (which stays as long as
-- what is outstanding); count only those still pending, so that a second ack
-- of an entry (a duplicate delivery, a retried call) counts nothing.
-- KEYS[1] the stream, KEYS[2] the books. ARGV[1] the group, ARGV[2..] ids.
-- Returns how many were acknowledged now.
local n = 0
for i = 2, #ARGV do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    redis.call('XDEL', KEYS[1], ARGV[i])
    n = n + 1
  end
end
if n > 0 then
  redis.call('HINCRBY', KEYS[2], 'acked', n)
end
return n
