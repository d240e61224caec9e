package redisbroker

import goredis "github.com/redis/go-redis/v9"

// The scripts below read an entry's delivery counter (XPENDING's
// times-delivered) in the same atomic step as the claim that changes it, so
// Attempt() is exactly the counter Redis keeps for the group. Facts they rely
// on, checked by TestRedisCounterSemantics: XREADGROUP ">" sets the counter
// to 1; XCLAIM and XAUTOCLAIM add 1; XCLAIM JUSTID does not, but resets the
// idle time; XCLAIM RETRYCOUNT sets it; XCLAIM and XAUTOCLAIM remove entries
// deleted from the stream from the PEL (Redis 7; in 6.2 they return them
// with nil fields, which the scripts XACK away).

// claimMine redelivers nacked entries to this consumer: for each id still
// pending for ARGV[2], XCLAIM it (counter + 1) and return {id, counter,
// fields}; {id, 0} when the entry is no longer ours (another consumer
// reclaimed it, or it was acked), {id, -1} when it was deleted from the
// stream (then it is acked away).
//
// KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3...] ids.
var claimMine = goredis.NewScript(`
local out = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2])
  if #p == 0 then
    table.insert(out, {id, 0})
  else
    local m = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id)
    if m[1] and m[1][2] then
      table.insert(out, {id, p[1][4] + 1, m[1][2]})
    else
      redis.call('XACK', KEYS[1], ARGV[1], id)
      table.insert(out, {id, -1})
    end
  end
end
return out
`)

// autoClaim reclaims entries idle for at least ARGV[3] ms (any consumer's,
// this one's included) with XAUTOCLAIM and returns {cursor, {{id, counter,
// fields}...}, deleted}: deleted counts entries that were pending but gone
// from the stream, which are removed from the PEL (acked away).
//
// KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3] min idle ms,
// ARGV[4] start cursor, ARGV[5] count.
var autoClaim = goredis.NewScript(`
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local out = {}
local deleted = 0
for _, m in ipairs(r[2]) do
  local id = m[1]
  if m[2] then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
    table.insert(out, {id, p[1][4], m[2]})
  else
    redis.call('XACK', KEYS[1], ARGV[1], id)
    deleted = deleted + 1
  end
end
if r[3] then
  deleted = deleted + #r[3]
end
return {r[1], out, deleted}
`)

// touch resets the idle time of entries this consumer holds back on purpose
// (nacked, waiting for their delay), without changing their counter, so
// that XAUTOCLAIM elsewhere does not take them. It returns the ids that are
// still ours; the others were taken by another consumer, acked or deleted.
//
// KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3...] ids.
var touch = goredis.NewScript(`
local out = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2])
  if #p > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
    table.insert(out, id)
  end
end
return out
`)

// handBack makes entries this consumer will not process (it is closing)
// claimable at once by the group's other consumers: their idle time is set
// to ARGV[3] ms and their counter to the given value, so the next claim
// gives the attempt number they should have.
//
// KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3] idle ms,
// then pairs id, counter.
var handBack = goredis.NewScript(`
local n = 0
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2])
  if #p > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'IDLE', ARGV[3], 'RETRYCOUNT', ARGV[i+1], 'JUSTID')
    n = n + 1
  end
end
return n
`)

// prune deletes consumers of the group that have no pending entries and have
// been idle for at least ARGV[2] ms; only the consumer ARGV[3] if it is not
// empty. A consumer with no pending entries holds nothing, so deleting it
// loses nothing (a live one is re-created by its next XREADGROUP); checking
// and deleting in one script leaves no window for an entry to arrive.
//
// KEYS[1] stream; ARGV[1] group, ARGV[2] min idle ms, ARGV[3] consumer or "".
var prune = goredis.NewScript(`
local cs = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
local minIdle = tonumber(ARGV[2])
local n = 0
for _, c in ipairs(cs) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i+1] end
  if f['pending'] == 0 and f['idle'] >= minIdle and (ARGV[3] == '' or f['name'] == ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    n = n + 1
  end
end
return n
`)
