-- Accept as many of the given items as the queue has room for, in order.
-- KEYS[1] the stream, KEYS[2] the books (hash), KEYS[3] this call's token.
-- ARGV[1] maxsize, ARGV[2] the token's lifetime (s), then pairs: field, payload.
-- Returns {accepted, outstanding after}. Idempotent by the token: coredis may
-- send the same call twice (a retry after a lost reply); the second answers
-- what the first did instead of adding the items again.
local done = redis.call('GET', KEYS[3])
if done then
  return {tonumber(done), -1}
end
local books = redis.call('HMGET', KEYS[2], 'enqueued', 'acked', 'dead')
local outstanding = (tonumber(books[1]) or 0) - (tonumber(books[2]) or 0)
  - (tonumber(books[3]) or 0)
local room = tonumber(ARGV[1]) - outstanding
local take = math.min((#ARGV - 2) / 2, math.max(room, 0))
for i = 1, take do
  redis.call('XADD', KEYS[1], '*', ARGV[1 + 2 * i], ARGV[2 + 2 * i])
end
if take > 0 then
  redis.call('HINCRBY', KEYS[2], 'enqueued', take)
  redis.call('SET', KEYS[3], take, 'EX', ARGV[2])
end
return {take, outstanding + take}
