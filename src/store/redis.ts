// The Redis store of cluster mode (issue 9): every node of a cluster keeps its accounts, topology, held messages,
// outbox and last-seen times in one shared Redis (7.0 or newer), with the observable semantics of SqliteStore
// (both pass test/store.contract.ts).
//
// Data model (every key under the prefix, default `p2pc:`; A is an account id, <id> a device/node ID):
//   acct:seq                 INCR counter of account ids (never reused)
//   acct:A                   hash email, fold (e-mail, ASCII lower-case), key, level, createdAt, [password: scrypt]
//   accts                    zset of account ids (score = id): listing in creation order, ZCARD for the count
//   idx:key / idx:email      hashes KEY -> A and folded e-mail -> A (case-insensitive like SQLite's NOCASE: ASCII)
//   signup:<token>           hash email, fold, password, level, expiresAt; EXPIREAT a second after it expires
//   topo:A:parent            hash node -> parent ('' for a root): the tree as current state
//   topo:A:kids:<id>         set of the children of <id> (subtree delete and rename without a scan)
//   topo:A:routers           set of router names; topo:A:members:<name> set of member IDs
//   topo:A:aliases           hash alias -> JSON array of targets
//   heldq:A:<id>             list of held messages, oldest first, each "<expiresAt>:<createdAt>:<data>"
//   heldids:A                set of IDs of the account with held messages
//   held:devices             set of "A:<id>" with held messages (heldKeys)
//   held:expiry              zset "A:<id>" -> a lower bound of the earliest expiry in heldq:A:<id> (purgeHeld)
//   held:count / held:dropped  counters: messages held, messages dropped by HOLDBUFFER (sum of dropped:A)
//   dropped:A                hash <id> -> messages of the device dropped by HOLDBUFFER
//   seen:A                   hash <id> -> last seen (epoch ms): the known devices
//   outbox:seq               INCR counter of outbox ids; members below are ids zero-padded to 15 digits (so that
//                            equal scores order by id)
//   outbox:msg:<id>          hash of one message
//   outbox:due               zset of queued messages by nextAt
//   outbox:acct:A|system     zset of an account's (or the system's) messages by id: listing newest first
//   outbox:recent:A          zset of an account's messages by createdAt: the hourly count
//   outbox:states            hash state -> number of messages (for /metrics)
// No KEYS or SCAN anywhere: every set of keys is reached through one of these indexes.
//
// Atomicity: every method is one command or one Lua script, so it runs whole or not at all with respect to other
// nodes (two nodes taking the same held messages: only one gets them). Scripts carry a `#!lua` shebang, so Redis
// refuses one up front when out of memory rather than failing half-way. The topology script journals every write
// and undoes it when a change is refused or a command fails; the other writing scripts check the type of every key
// they will write (and read what they need) before their first write, so neither a refusal nor data of the wrong
// type under the prefix leaves anything half-applied. Scripts reach keys built from the prefix rather than declared
// ones: this is for a standalone Redis (or a primary with replicas/Sentinel), not Redis Cluster.
//
// Connection: one ioredis connection per store, so calls keep their order (each method sends its one command at the
// call, before returning its Promise). Choices, for "fail clearly while Redis is away, work again when it is back":
// - the offline queue is on, so a short reconnect (a Redis restart or failover) is ridden out in order;
// - maxRetriesPerRequest 2 with a reconnect delay of at most 500 ms and a connect timeout of 2 s: a call made while
//   Redis is away rejects after at most three reconnect attempts (0.15-1.5 s when the port refuses, at most ~7.5 s
//   when the host does not answer) with "Redis store at host:port is unavailable: ...", and ioredis keeps
//   reconnecting, so calls work again as soon as Redis is back;
// - commands in flight when the connection drops are rejected at once ("connection lost; the call may or may not have
//   been carried out") instead of being written again after the reconnect (ioredis' autoResend), which could apply a
//   write twice (two outbox messages, an account creation answered EXISTS);
// - commandTimeout 10 s bounds a call to a Redis that is connected but does not answer (outcome unknown, too);
// - a closed store refuses calls at once ("the Redis store is closed").
// ioredis sends a script's source on a connection's first use and its SHA after; only if Redis loses its script
// cache while connected (SCRIPT FLUSH) does a script go out again later, after calls made since.
// Passwords are hashed with credentials.ts (scrypt, synchronous: the command still goes out at the call).

import { Redis } from 'ioredis';
import type { TopologyChange } from '../routing/changes.ts';
import { generateKey, hashPassword, isValidEmail, verifyPassword } from './credentials.ts';
import {
  type AccountRecord,
  type HeldSummary,
  type HoldRequest,
  type OutboxItem,
  type Store,
  StoreError,
} from './store.ts';

/** Options of RedisStore.open. */
export interface RedisStoreOptions {
  /** Prefix of every key (default `p2pc:`); stores with different prefixes share a Redis without meeting. */
  prefix?: string;
}

const RETRIES_PER_CALL = 2;
const MAX_RECONNECT_DELAY_MS = 500;
const CONNECT_TIMEOUT_MS = 2000;
const COMMAND_TIMEOUT_MS = 10_000;

/** E-mail case folding like SQLite's NOCASE: ASCII letters only. */
function fold(email: string): string {
  return email.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

/** A number Lua's tonumber and Redis scores read back exactly; non-finite values become far-future ones. */
function num(n: number): string {
  if (Number.isNaN(n)) return '0';
  if (!Number.isFinite(n)) return n > 0 ? '8.64e15' : '-8.64e15';
  return String(n);
}

const byStr = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

// ------------------------------------------------------------------------------------------------ Lua scripts

const ACCOUNT_FIELDS = `'email', 'key', 'level', 'createdAt'`;

/** Shared by createAccount and activateSignup: inserts an account, or returns nil and an error reply. */
const NEW_ACCOUNT = `
local function accountTypes()
  types('hash', P .. 'idx:email', P .. 'idx:key')
  types('zset', P .. 'accts')
  types('string', P .. 'acct:seq')
end
local function newAccount(email, fold, hash, level, key, createdAt)
  accountTypes()
  if redis.call('HEXISTS', P .. 'idx:email', fold) == 1 then return nil, 'P2PC:EXISTS account exists: ' .. email end
  if redis.call('HEXISTS', P .. 'idx:key', key) == 1 then return nil, 'P2PC:CONFLICT KEY collision' end
  local id = redis.call('INCR', P .. 'acct:seq')
  local a = P .. 'acct:' .. id
  types('hash', a)
  redis.call('HSET', a, 'email', email, 'fold', fold, 'key', key, 'level', level, 'createdAt', createdAt)
  if hash ~= '' then redis.call('HSET', a, 'password', hash) end
  redis.call('HSET', P .. 'idx:email', fold, id)
  redis.call('HSET', P .. 'idx:key', key, id)
  redis.call('ZADD', P .. 'accts', id, id)
  return {id, email, key, level, createdAt}
end
`;

/**
 * Every script's opening: the key prefix comes first in ARGV; `types` refuses (before any write) keys that hold
 * another type than the script will write, so data planted under the prefix cannot stop a script part-way.
 */
const HEAD = `local P = ARGV[1]
local function types(kind, ...)
  for i = 1, select('#', ...) do
    local k = select(i, ...)
    local t = redis.call('TYPE', k)['ok']
    if t ~= 'none' and t ~= kind then error({err = 'WRONGTYPE ' .. k .. ' holds a ' .. t .. ', not a ' .. kind}) end
  end
end
`;

const SCRIPTS = {
  // ARGV: P, email, fold, hash|'', level, key, createdAt
  createAccount: `${NEW_ACCOUNT}
local r, err = newAccount(ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
if not r then return redis.error_reply(err) end
return r`,

  // ARGV: P, 'key'|'email'|'id', value
  accountBy: `
local id = ARGV[3]
if ARGV[2] ~= 'id' then
  id = redis.call('HGET', P .. 'idx:' .. ARGV[2], ARGV[3])
  if not id then return false end
end
local r = redis.call('HMGET', P .. 'acct:' .. id, ${ACCOUNT_FIELDS})
if not r[1] then return false end
return {id, r[1], r[2], r[3], r[4]}`,

  // ARGV: P
  listAccounts: `
local out = {}
for _, id in ipairs(redis.call('ZRANGE', P .. 'accts', 0, -1)) do
  local r = redis.call('HMGET', P .. 'acct:' .. id, ${ACCOUNT_FIELDS})
  if r[1] then
    out[#out + 1] = id
    for i = 1, 4 do out[#out + 1] = r[i] end
  end
end
return out`,

  // ARGV: P, fold
  passwordOf: `
local id = redis.call('HGET', P .. 'idx:email', ARGV[2])
if not id then return false end
return redis.call('HGET', P .. 'acct:' .. id, 'password')`,

  // ARGV: P, id, field, value, newKey?  ('key': a fresh KEY; 'level'; 'password'). Nil for an unknown account.
  setAccount: `
local a = P .. 'acct:' .. ARGV[2]
if redis.call('EXISTS', a) == 0 then return false end
types('hash', a, P .. 'idx:key')
if ARGV[3] == 'key' then
  if redis.call('HEXISTS', P .. 'idx:key', ARGV[4]) == 1 then return redis.error_reply('P2PC:CONFLICT KEY collision') end
  local old = redis.call('HGET', a, 'key')
  if old and redis.call('HGET', P .. 'idx:key', old) == ARGV[2] then redis.call('HDEL', P .. 'idx:key', old) end
  redis.call('HSET', P .. 'idx:key', ARGV[4], ARGV[2])
end
redis.call('HSET', a, ARGV[3], ARGV[4])
local r = redis.call('HMGET', a, ${ACCOUNT_FIELDS})
return {ARGV[2], r[1], r[2], r[3], r[4]}`,

  // ARGV: P, id. Everything the account owns: record, indexes, topology, held messages, known devices, outbox.
  deleteAccount: `
local A = ARGV[2]
local a = P .. 'acct:' .. A
local T = P .. 'topo:' .. A .. ':'
-- Read (and so type-check) everything first; the writes below do not fail on data of this store.
local rec = redis.call('HMGET', a, 'fold', 'key')
local parents = redis.call('HVALS', T .. 'parent')
local routers = redis.call('SMEMBERS', T .. 'routers')
local heldIds = redis.call('SMEMBERS', P .. 'heldids:' .. A)
local held = 0
for _, id in ipairs(heldIds) do held = held + redis.call('LLEN', P .. 'heldq:' .. A .. ':' .. id) end
local dropped = 0
for _, n in ipairs(redis.call('HVALS', P .. 'dropped:' .. A)) do dropped = dropped + tonumber(n) end
local msgs = redis.call('ZRANGE', P .. 'outbox:acct:' .. A, 0, -1)
local states = {}
for i, m in ipairs(msgs) do states[i] = redis.call('HGET', P .. 'outbox:msg:' .. m, 'state') end
types('hash', P .. 'idx:email', P .. 'idx:key', P .. 'outbox:states')
types('zset', P .. 'accts', P .. 'held:expiry', P .. 'outbox:due')
types('set', P .. 'held:devices')
types('string', P .. 'held:count', P .. 'held:dropped')

if rec[1] and redis.call('HGET', P .. 'idx:email', rec[1]) == A then redis.call('HDEL', P .. 'idx:email', rec[1]) end
if rec[2] and redis.call('HGET', P .. 'idx:key', rec[2]) == A then redis.call('HDEL', P .. 'idx:key', rec[2]) end
redis.call('DEL', a)
redis.call('ZREM', P .. 'accts', A)
for _, p in ipairs(parents) do if p ~= '' then redis.call('DEL', T .. 'kids:' .. p) end end
for _, r in ipairs(routers) do redis.call('DEL', T .. 'members:' .. r) end
redis.call('DEL', T .. 'parent', T .. 'routers', T .. 'aliases')
for _, id in ipairs(heldIds) do
  redis.call('DEL', P .. 'heldq:' .. A .. ':' .. id)
  redis.call('SREM', P .. 'held:devices', A .. ':' .. id)
  redis.call('ZREM', P .. 'held:expiry', A .. ':' .. id)
end
if held > 0 then redis.call('DECRBY', P .. 'held:count', held) end
if dropped > 0 then redis.call('DECRBY', P .. 'held:dropped', dropped) end
redis.call('DEL', P .. 'heldids:' .. A, P .. 'dropped:' .. A, P .. 'seen:' .. A)
for i, m in ipairs(msgs) do
  if states[i] and redis.call('HINCRBY', P .. 'outbox:states', states[i], -1) <= 0 then
    redis.call('HDEL', P .. 'outbox:states', states[i])
  end
  redis.call('ZREM', P .. 'outbox:due', m)
  redis.call('DEL', P .. 'outbox:msg:' .. m)
end
redis.call('DEL', P .. 'outbox:acct:' .. A, P .. 'outbox:recent:' .. A)
return 1`,

  // ARGV: P, token, email, fold, hash, level, expiresAt (epoch s)
  createSignup: `
local s = P .. 'signup:' .. ARGV[2]
if redis.call('EXISTS', s) == 1 then return redis.error_reply('P2PC:CONFLICT sign-up token exists') end
types('hash', s)
redis.call('HSET', s, 'email', ARGV[3], 'fold', ARGV[4], 'password', ARGV[5], 'level', ARGV[6], 'expiresAt', ARGV[7])
redis.call('EXPIREAT', s, math.floor(tonumber(ARGV[7])) + 1)
return 1`,

  // ARGV: P, token, now (epoch s), key, createdAt
  activateSignup: `${NEW_ACCOUNT}
local s = P .. 'signup:' .. ARGV[2]
local r = redis.call('HMGET', s, 'email', 'fold', 'password', 'level', 'expiresAt')
if not r[1] then return false end
accountTypes()
redis.call('DEL', s)
if tonumber(r[5]) < tonumber(ARGV[3]) then return false end
if redis.call('HEXISTS', P .. 'idx:email', r[2]) == 1 then
  return redis.error_reply('P2PC:EXISTS an account with that e-mail exists')
end
local a, err = newAccount(r[1], r[2], r[3], r[4], ARGV[4], ARGV[5])
if not a then return redis.error_reply(err) end
return a`,

  // ARGV: P, A
  loadTopology: `
local T = P .. 'topo:' .. ARGV[2] .. ':'
local routers = {}
for _, name in ipairs(redis.call('SMEMBERS', T .. 'routers')) do
  routers[#routers + 1] = name
  routers[#routers + 1] = redis.call('SMEMBERS', T .. 'members:' .. name)
end
return {redis.call('HGETALL', T .. 'parent'), routers, redis.call('HGETALL', T .. 'aliases')}`,

  // ARGV: P, A, then per change: op, a, b (node-add/move: b = parent, '' for a root; alias-set: b = JSON targets)
  saveChanges: `
local A = ARGV[2]
local T = P .. 'topo:' .. A .. ':'
local PARENT = T .. 'parent'
local ROUTERS = T .. 'routers'
local accountExists = redis.call('EXISTS', P .. 'acct:' .. A) == 1
local journal = {}
local function hset(k, f, v)
  journal[#journal + 1] = {'h', k, f, redis.call('HGET', k, f)}
  redis.call('HSET', k, f, v)
end
local function hdel(k, f)
  journal[#journal + 1] = {'h', k, f, redis.call('HGET', k, f)}
  redis.call('HDEL', k, f)
end
local function sadd(k, m)
  journal[#journal + 1] = {'s', k, m, redis.call('SISMEMBER', k, m)}
  redis.call('SADD', k, m)
end
local function srem(k, m)
  journal[#journal + 1] = {'s', k, m, redis.call('SISMEMBER', k, m)}
  redis.call('SREM', k, m)
end
local function rollback()
  for i = #journal, 1, -1 do
    local j = journal[i]
    if j[1] == 'h' then
      if j[4] then redis.call('HSET', j[2], j[3], j[4]) else redis.call('HDEL', j[2], j[3]) end
    else
      if j[4] == 1 then redis.call('SADD', j[2], j[3]) else redis.call('SREM', j[2], j[3]) end
    end
  end
end
local function refuse(msg) error({p2pc = msg}) end
local function needAccount() if not accountExists then refuse('no account ' .. A) end end
local function kids(id) return T .. 'kids:' .. id end
local function parentOf(id) return redis.call('HGET', PARENT, id) end
local function link(id, p) if p ~= '' then sadd(kids(p), id) end end
local function unlink(id, p) if p ~= '' then srem(kids(p), id) end end

local function apply(op, a, b)
  if op == 'node-add' then
    needAccount()
    if parentOf(a) then refuse('node ' .. a .. ' exists') end
    hset(PARENT, a, b)
    link(a, b)
  elseif op == 'node-move' then
    local old = parentOf(a)
    if old then
      unlink(a, old)
      hset(PARENT, a, b)
      link(a, b)
    end
  elseif op == 'node-delete' then
    local p = parentOf(a)
    if p then unlink(a, p) end
    local stack, seen = {a}, {}
    while #stack > 0 do
      local x = table.remove(stack)
      if not seen[x] then
        seen[x] = true
        for _, ch in ipairs(redis.call('SMEMBERS', kids(x))) do
          stack[#stack + 1] = ch
          srem(kids(x), ch)
        end
        hdel(PARENT, x)
      end
    end
  elseif op == 'node-rename' then
    if a == b then return end
    local p = parentOf(a)
    if p then
      if parentOf(b) then refuse('node ' .. b .. ' exists') end
      hdel(PARENT, a)
      hset(PARENT, b, p)
      unlink(a, p)
      link(b, p)
    end
    for _, ch in ipairs(redis.call('SMEMBERS', kids(a))) do
      srem(kids(a), ch)
      sadd(kids(b), ch)
      hset(PARENT, ch, b)
    end
  elseif op == 'router-add' then
    needAccount()
    if redis.call('SISMEMBER', ROUTERS, a) == 1 then refuse('router ' .. a .. ' exists') end
    sadd(ROUTERS, a)
  elseif op == 'router-delete' then
    for _, m in ipairs(redis.call('SMEMBERS', T .. 'members:' .. a)) do srem(T .. 'members:' .. a, m) end
    srem(ROUTERS, a)
  elseif op == 'member-add' then
    if redis.call('SISMEMBER', ROUTERS, a) == 0 then refuse('no router ' .. a) end
    sadd(T .. 'members:' .. a, b)
  elseif op == 'member-delete' then
    srem(T .. 'members:' .. a, b)
  elseif op == 'alias-set' then
    needAccount()
    hset(T .. 'aliases', a, b)
  elseif op == 'alias-delete' then
    hdel(T .. 'aliases', a)
  else
    refuse('unknown change ' .. tostring(op))
  end
end

local ok, err = pcall(function() for i = 3, #ARGV, 3 do apply(ARGV[i], ARGV[i + 1], ARGV[i + 2]) end end)
if not ok then
  rollback()
  if type(err) == 'table' and err.p2pc then return redis.error_reply('P2PC:CONFLICT ' .. err.p2pc) end
  if type(err) == 'table' and err.err then return redis.error_reply(err.err) end
  return redis.error_reply(tostring(err))
end
return (#ARGV - 2) / 3`,

  // ARGV: P, now, then per message: A, id, entry, expiresAt, limit
  hold: `
local accounts = {}
for i = 3, #ARGV, 5 do
  local A = ARGV[i]
  if accounts[A] == nil then
    if redis.call('EXISTS', P .. 'acct:' .. A) == 0 then return redis.error_reply('P2PC:INVALID no account ' .. A) end
    accounts[A] = true
  end
  types('list', P .. 'heldq:' .. A .. ':' .. ARGV[i + 1])
  types('set', P .. 'heldids:' .. A)
  types('hash', P .. 'dropped:' .. A)
end
types('set', P .. 'held:devices')
types('zset', P .. 'held:expiry')
types('string', P .. 'held:count', P .. 'held:dropped')
local touched, order = {}, {}
local added = 0
for i = 3, #ARGV, 5 do
  local A, id = ARGV[i], ARGV[i + 1]
  local dev = A .. ':' .. id
  redis.call('RPUSH', P .. 'heldq:' .. dev, ARGV[i + 2])
  redis.call('SADD', P .. 'held:devices', dev)
  redis.call('SADD', P .. 'heldids:' .. A, id)
  redis.call('ZADD', P .. 'held:expiry', 'LT', ARGV[i + 3], dev)
  added = added + 1
  if touched[dev] == nil then order[#order + 1] = {A, id, dev} end
  touched[dev] = math.max(tonumber(ARGV[i + 4]), 0)
end
redis.call('INCRBY', P .. 'held:count', added)
-- HOLDBUFFER: keep the newest 'limit' (the last request's), drop the oldest, and count the drops.
for _, t in ipairs(order) do
  local A, id, dev = t[1], t[2], t[3]
  local q = P .. 'heldq:' .. dev
  local n = redis.call('LLEN', q)
  local limit = touched[dev]
  if n > limit then
    local excess = n - limit
    redis.call('LTRIM', q, excess, -1)
    redis.call('DECRBY', P .. 'held:count', excess)
    redis.call('HINCRBY', P .. 'dropped:' .. A, id, excess)
    redis.call('INCRBY', P .. 'held:dropped', excess)
    if limit == 0 then
      redis.call('SREM', P .. 'held:devices', dev)
      redis.call('SREM', P .. 'heldids:' .. A, id)
      redis.call('ZREM', P .. 'held:expiry', dev)
    end
  end
end
return added`,

  // ARGV: P, A, id, now. The unexpired messages, oldest first; all of the device's are deleted.
  takeHeld: `
local A, id, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
local dev = A .. ':' .. id
local q = P .. 'heldq:' .. dev
local items = redis.call('LRANGE', q, 0, -1)
if #items == 0 then return {} end
types('set', P .. 'held:devices', P .. 'heldids:' .. A)
types('zset', P .. 'held:expiry')
types('string', P .. 'held:count')
redis.call('DEL', q)
redis.call('DECRBY', P .. 'held:count', #items)
redis.call('SREM', P .. 'held:devices', dev)
redis.call('SREM', P .. 'heldids:' .. A, id)
redis.call('ZREM', P .. 'held:expiry', dev)
local out = {}
for _, e in ipairs(items) do
  local exp, created = string.match(e, '^([^:]*):([^:]*):')
  if tonumber(exp) > now then out[#out + 1] = string.sub(e, #exp + #created + 3) end
end
return out`,

  // ARGV: P, A
  heldSummary: `
local A = ARGV[2]
local ids = {}
for _, id in ipairs(redis.call('SMEMBERS', P .. 'heldids:' .. A)) do ids[id] = true end
local drops = redis.call('HGETALL', P .. 'dropped:' .. A)
local dropped = {}
for i = 1, #drops, 2 do
  dropped[drops[i]] = tonumber(drops[i + 1])
  if dropped[drops[i]] > 0 then ids[drops[i]] = true end
end
local out = {}
for id in pairs(ids) do
  local count, oldest, oldestText = 0, false, false
  for _, e in ipairs(redis.call('LRANGE', P .. 'heldq:' .. A .. ':' .. id, 0, -1)) do
    count = count + 1
    local text = string.match(e, '^[^:]*:([^:]*):')
    local created = tonumber(text)
    if oldest == false or created < oldest then oldest, oldestText = created, text end
  end
  out[#out + 1] = {id, count, oldestText, dropped[id] or 0}
end
return out`,

  // ARGV: P, now. Deletes expired held messages; returns how many.
  purgeHeld: `
local now = tonumber(ARGV[2])
local devs = redis.call('ZRANGEBYSCORE', P .. 'held:expiry', '-inf', ARGV[2])
-- Read every list first (a lower bound may be stale: such a device keeps its messages and gets its exact bound).
local plans = {}
for i, dev in ipairs(devs) do
  local keep, earliest = {}, false
  local items = redis.call('LRANGE', P .. 'heldq:' .. dev, 0, -1)
  for _, e in ipairs(items) do
    local exp = tonumber(string.match(e, '^([^:]*):'))
    if exp > now then
      keep[#keep + 1] = e
      if earliest == false or exp < earliest then earliest = exp end
    end
  end
  local sep = string.find(dev, ':', 1, true)
  local ids = P .. 'heldids:' .. string.sub(dev, 1, sep - 1)
  types('set', ids)
  plans[i] = {dev, keep, earliest, #items - #keep, ids, string.sub(dev, sep + 1)}
end
types('set', P .. 'held:devices')
types('string', P .. 'held:count')
local removed = 0
for _, plan in ipairs(plans) do
  local dev, keep, earliest, gone = plan[1], plan[2], plan[3], plan[4]
  local q = P .. 'heldq:' .. dev
  removed = removed + gone
  if #keep == 0 then
    redis.call('DEL', q)
    redis.call('SREM', P .. 'held:devices', dev)
    redis.call('SREM', plan[5], plan[6])
    redis.call('ZREM', P .. 'held:expiry', dev)
  else
    if gone > 0 then
      redis.call('DEL', q)
      for i = 1, #keep, 1000 do redis.call('RPUSH', q, unpack(keep, i, math.min(i + 999, #keep))) end
    end
    redis.call('ZADD', P .. 'held:expiry', earliest, dev)
  end
end
if removed > 0 then redis.call('DECRBY', P .. 'held:count', removed) end
return removed`,

  // ARGV: P, now, then pairs A, id. Devices of accounts that do not exist are skipped.
  markSeen: `
local exists = {}
for i = 3, #ARGV, 2 do
  local A = ARGV[i]
  if exists[A] == nil then
    exists[A] = redis.call('EXISTS', P .. 'acct:' .. A) == 1
    types('hash', P .. 'seen:' .. A)
  end
end
for i = 3, #ARGV, 2 do
  local A = ARGV[i]
  if exists[A] then redis.call('HSET', P .. 'seen:' .. A, ARGV[i + 1], ARGV[2]) end
end
return 1`,

  // ARGV: P, A|'', kind, recipient, subject, body, now
  enqueue: `
local A, now = ARGV[2], ARGV[7]
local list = A == '' and 'system' or A
types('string', P .. 'outbox:seq')
types('zset', P .. 'outbox:due', P .. 'outbox:acct:' .. list, P .. 'outbox:recent:' .. list)
types('hash', P .. 'outbox:states')
local id = redis.call('INCR', P .. 'outbox:seq')
local m = string.format('%015d', id)
types('hash', P .. 'outbox:msg:' .. m)
redis.call('HSET', P .. 'outbox:msg:' .. m, 'accountId', A, 'kind', ARGV[3], 'recipient', ARGV[4], 'subject', ARGV[5],
  'body', ARGV[6], 'state', 'queued', 'attempts', 0, 'nextAt', now, 'createdAt', now, 'updatedAt', now)
redis.call('ZADD', P .. 'outbox:due', now, m)
redis.call('ZADD', P .. 'outbox:acct:' .. list, id, m)
if A ~= '' then redis.call('ZADD', P .. 'outbox:recent:' .. A, now, m) end
redis.call('HINCRBY', P .. 'outbox:states', 'queued', 1)
return id`,

  // ARGV: P, id, state, attempts, nextAt, error|'', hasError '1'|'0', updatedAt
  updateOutbox: `
local n = tonumber(ARGV[2])
if n == nil or n ~= math.floor(n) then return 0 end
local m = string.format('%015d', n)
local k = P .. 'outbox:msg:' .. m
local old = redis.call('HGET', k, 'state')
if not old then return 0 end
types('hash', P .. 'outbox:states')
types('zset', P .. 'outbox:due')
local state = ARGV[3]
redis.call('HSET', k, 'state', state, 'attempts', ARGV[4], 'nextAt', ARGV[5], 'updatedAt', ARGV[8])
if ARGV[7] == '1' then redis.call('HSET', k, 'lastError', ARGV[6]) else redis.call('HDEL', k, 'lastError') end
if old ~= state then
  if redis.call('HINCRBY', P .. 'outbox:states', old, -1) <= 0 then redis.call('HDEL', P .. 'outbox:states', old) end
  redis.call('HINCRBY', P .. 'outbox:states', state, 1)
end
if state == 'queued' then redis.call('ZADD', P .. 'outbox:due', ARGV[5], m) else redis.call('ZREM', P .. 'outbox:due', m) end
return 1`,

  // ARGV: P, 'due'|'list', now|A-or-'system', limit. Rows of messages.
  outboxRows: `
local limit = tonumber(ARGV[4])
local ms
if ARGV[2] == 'due' then
  ms = redis.call('ZRANGEBYSCORE', P .. 'outbox:due', '-inf', ARGV[3], 'LIMIT', 0, limit)
elseif limit == 0 then
  ms = {}
else
  ms = redis.call('ZREVRANGE', P .. 'outbox:acct:' .. ARGV[3], 0, limit < 0 and -1 or limit - 1)
end
local out = {}
for _, m in ipairs(ms) do
  local r = redis.call('HMGET', P .. 'outbox:msg:' .. m, 'accountId', 'kind', 'recipient', 'subject', 'body', 'state',
    'attempts', 'nextAt', 'lastError', 'createdAt', 'updatedAt')
  if r[2] then
    table.insert(r, 1, m)
    out[#out + 1] = r
  end
end
return out`,
} as const;

type ScriptName = keyof typeof SCRIPTS;
type Reply = string | number | null | Reply[];
type Run = (...args: (string | number)[]) => Promise<Reply>;

const READ_ONLY: ReadonlySet<ScriptName> = new Set([
  'accountBy',
  'listAccounts',
  'passwordOf',
  'loadTopology',
  'heldSummary',
  'outboxRows',
]);

function toAccount(r: Reply): AccountRecord | null {
  if (!Array.isArray(r)) return null;
  const [id, email, key, level, createdAt] = r as [string | number, string, string, string, string];
  return { id: Number(id), email, key, level: Number(level), createdAt: Number(createdAt) };
}

function toOutbox(r: Reply[]): OutboxItem {
  const [id, accountId, kind, recipient, subject, body, state, attempts, nextAt, lastError, createdAt, updatedAt] =
    r as string[];
  return {
    id: Number(id),
    accountId: accountId === '' || accountId == null ? null : Number(accountId),
    kind: kind as OutboxItem['kind'],
    recipient: recipient!,
    subject: subject!,
    body: body!,
    state: state as OutboxItem['state'],
    attempts: Number(attempts),
    nextAt: Number(nextAt),
    lastError: lastError ?? null,
    createdAt: Number(createdAt),
    updatedAt: Number(updatedAt),
  };
}

/** A topology change in the flat form the saveChanges script reads: op, a, b ('' for a root's parent). */
function wire(c: TopologyChange): [string, string, string] {
  switch (c.op) {
    case 'node-add':
    case 'node-move':
      return [c.op, c.id, c.parent ?? ''];
    case 'node-delete':
      return [c.op, c.id, ''];
    case 'node-rename':
      return [c.op, c.from, c.to];
    case 'router-add':
    case 'router-delete':
    case 'alias-delete':
      return [c.op, c.name, ''];
    case 'member-add':
    case 'member-delete':
      return [c.op, c.router, c.id];
    case 'alias-set':
      return [c.op, c.name, JSON.stringify(c.targets)];
  }
}

export class RedisStore implements Store {
  private readonly redis: Redis;
  private readonly prefix: string;
  /** host:port (never the password), for error messages. */
  private readonly where: string;
  private readonly scripts: Record<ScriptName, Run>;
  private closed = false;

  private constructor(redis: Redis, prefix: string, where: string) {
    this.redis = redis;
    this.prefix = prefix;
    this.where = where;
    const scripts: Partial<Record<ScriptName, Run>> = {};
    for (const name of Object.keys(SCRIPTS) as ScriptName[]) {
      const shebang = READ_ONLY.has(name) ? '#!lua flags=no-writes' : '#!lua';
      const command = `p2pc_${name}`;
      redis.defineCommand(command, { numberOfKeys: 0, lua: `${shebang}\n${HEAD}${SCRIPTS[name]}` });
      const fn = (redis as unknown as Record<string, Run>)[command]!.bind(redis);
      scripts[name] = (...args) => fn(prefix, ...args);
    }
    this.scripts = scripts as Record<ScriptName, Run>;
  }

  /** Connects to Redis at `url` (redis://[user:password@]host:port[/db]); rejects if it cannot be reached. */
  static async open(url: string, opts: RedisStoreOptions = {}): Promise<RedisStore> {
    const redis = new Redis(url, {
      lazyConnect: true,
      enableOfflineQueue: true,
      maxRetriesPerRequest: RETRIES_PER_CALL,
      retryStrategy: (times: number) => Math.min(times * 50, MAX_RECONNECT_DELAY_MS),
      connectTimeout: CONNECT_TIMEOUT_MS,
      commandTimeout: COMMAND_TIMEOUT_MS,
      autoResendUnfulfilledCommands: false,
      enableAutoPipelining: false,
    });
    const o = redis.options;
    const where = o.path ? String(o.path) : `${o.host}:${o.port}${o.db ? `/${o.db}` : ''}`;
    // Errors are reported through the calls that meet them; without a listener ioredis would print each one.
    redis.on('error', () => {});
    redis.on('close', () => {
      // Commands written before the connection dropped: Redis may or may not have run them. Reject them now rather
      // than let ioredis write them again after reconnecting.
      const lost = new Error(`connection to Redis at ${where} lost (the call may or may not have been carried out)`);
      for (let item = redis.commandQueue.shift(); item !== undefined; item = redis.commandQueue.shift()) {
        item.command.reject(lost);
      }
    });
    try {
      await redis.connect();
      const info = String(await redis.info('server'));
      const version = /redis_version:(\d+)/.exec(info)?.[1];
      if (version !== undefined && Number(version) < 7) throw new Error(`Redis ${version} is too old: 7.0 or newer`);
    } catch (err) {
      redis.disconnect();
      const msg = err instanceof Error ? err.message : String(err);
      throw new Error(`cannot open the Redis store at ${where}: ${msg}`, { cause: err });
    }
    return new RedisStore(redis, opts.prefix ?? 'p2pc:', where);
  }

  /** A store call's failure as the error callers see: StoreError for store refusals, else a clear message. */
  private fail(err: unknown): Error {
    if (err instanceof StoreError) return err;
    const msg = err instanceof Error ? err.message : String(err);
    const m = /^P2PC:(\w+) ([\s\S]*)$/.exec(msg);
    if (m !== null) {
      if (m[1] === 'EXISTS' || m[1] === 'INVALID') return new StoreError(m[1], m[2]!);
      return new Error(`refused by the Redis store: ${m[2]}`, { cause: err });
    }
    if (this.closed) return new Error('the Redis store is closed', { cause: err });
    if (err instanceof Error && err.name === 'ReplyError') {
      return new Error(`Redis store at ${this.where}: ${msg}`, { cause: err });
    }
    return new Error(`Redis store at ${this.where} is unavailable: ${msg}`, { cause: err });
  }

  /** Runs a script; the command is sent now (call order), the Promise settles with its reply. */
  private run(name: ScriptName, ...args: (string | number)[]): Promise<Reply> {
    return this.send(() => this.scripts[name](...args));
  }

  /** Sends one command now (a closed store refuses at once) and maps its failure. */
  private send<T>(command: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new Error('the Redis store is closed'));
    return command().catch((err: unknown) => {
      throw this.fail(err);
    });
  }

  private k(key: string): string {
    return this.prefix + key;
  }

  // ------------------------------------------------------------------------------------------------ accounts

  async createAccount(email: string, password: string | null, level: number): Promise<AccountRecord> {
    if (!isValidEmail(email)) throw new StoreError('INVALID', `not an e-mail address: ${email}`);
    const hash = password === null ? '' : hashPassword(password);
    const createdAt = Math.floor(Date.now() / 1000);
    return toAccount(await this.run('createAccount', email, fold(email), hash, level, generateKey(), createdAt))!;
  }

  async accountByKey(key: string): Promise<AccountRecord | null> {
    return toAccount(await this.run('accountBy', 'key', key.toUpperCase()));
  }

  async accountByEmail(email: string): Promise<AccountRecord | null> {
    return toAccount(await this.run('accountBy', 'email', fold(email)));
  }

  async accountById(id: number): Promise<AccountRecord | null> {
    return toAccount(await this.run('accountBy', 'id', id));
  }

  async countAccounts(): Promise<number> {
    return Number(await this.send(() => this.redis.zcard(this.k('accts'))));
  }

  async checkPassword(email: string, password: string): Promise<boolean> {
    const hash = await this.run('passwordOf', fold(email));
    return typeof hash === 'string' && verifyPassword(password, hash);
  }

  async listAccounts(): Promise<AccountRecord[]> {
    const r = (await this.run('listAccounts')) as Reply[];
    const out: AccountRecord[] = [];
    for (let i = 0; i < r.length; i += 5) out.push(toAccount(r.slice(i, i + 5))!);
    return out;
  }

  async deleteAccount(id: number): Promise<void> {
    await this.run('deleteAccount', id);
  }

  async resetKey(id: number): Promise<AccountRecord> {
    const acct = toAccount(await this.run('setAccount', id, 'key', generateKey()));
    if (acct === null) throw new StoreError('INVALID', `no account ${id}`);
    return acct;
  }

  async setLevel(id: number, level: number): Promise<AccountRecord> {
    const acct = toAccount(await this.run('setAccount', id, 'level', level));
    if (acct === null) throw new StoreError('INVALID', `no account ${id}`);
    return acct;
  }

  async setPassword(id: number, password: string): Promise<void> {
    await this.run('setAccount', id, 'password', hashPassword(password));
  }

  // ------------------------------------------------------------------------------------------------ sign-ups

  async createSignup(email: string, password: string, level: number, token: string, expiresAt: number): Promise<void> {
    if (!isValidEmail(email)) throw new StoreError('INVALID', `not an e-mail address: ${email}`);
    await this.run('createSignup', token, email, fold(email), hashPassword(password), level, num(expiresAt));
  }

  async activateSignup(token: string, now: number): Promise<AccountRecord | null> {
    const createdAt = Math.floor(Date.now() / 1000);
    return toAccount(await this.run('activateSignup', token, num(now), generateKey(), createdAt));
  }

  // ------------------------------------------------------------------------------------------------ topology

  async loadTopology(accountId: number): Promise<TopologyChange[]> {
    const [parentFlat, routerFlat, aliasFlat] = (await this.run('loadTopology', accountId)) as [
      string[],
      (string | string[])[],
      string[],
    ];
    const out: TopologyChange[] = [];
    // Parents before children (breadth first from the roots), as SQLite's recursive query: a node whose parent is
    // not in the tree is not reachable and so not loaded, there as here.
    const children = new Map<string, string[]>();
    for (let i = 0; i < parentFlat.length; i += 2) {
      const id = parentFlat[i]!;
      const parent = parentFlat[i + 1]!;
      let list = children.get(parent);
      if (list === undefined) {
        list = [];
        children.set(parent, list);
      }
      list.push(id);
    }
    let level: [string, string | null][] = (children.get('') ?? []).sort(byStr).map((id) => [id, null]);
    const seen = new Set<string>();
    while (level.length > 0) {
      const next: [string, string | null][] = [];
      for (const [id, parent] of level) {
        if (seen.has(id)) continue;
        seen.add(id);
        out.push({ op: 'node-add', id, parent });
        for (const c of (children.get(id) ?? []).sort(byStr)) next.push([c, id]);
      }
      level = next;
    }
    const routers: [string, string[]][] = [];
    for (let i = 0; i < routerFlat.length; i += 2) {
      routers.push([routerFlat[i] as string, [...(routerFlat[i + 1] as string[])].sort(byStr)]);
    }
    routers.sort((a, b) => byStr(a[0], b[0]));
    for (const [name] of routers) out.push({ op: 'router-add', name });
    for (const [router, members] of routers) for (const id of members) out.push({ op: 'member-add', router, id });
    const aliases: [string, string][] = [];
    for (let i = 0; i < aliasFlat.length; i += 2) aliases.push([aliasFlat[i]!, aliasFlat[i + 1]!]);
    aliases.sort((a, b) => byStr(a[0], b[0]));
    for (const [name, targets] of aliases)
      out.push({ op: 'alias-set', name, targets: JSON.parse(targets) as string[] });
    return out;
  }

  async saveChange(accountId: number, change: TopologyChange): Promise<void> {
    await this.saveChanges(accountId, [change]);
  }

  async saveChanges(accountId: number, changes: readonly TopologyChange[]): Promise<void> {
    if (changes.length === 0) return;
    await this.run('saveChanges', accountId, ...changes.flatMap(wire));
  }

  // ------------------------------------------------------------------------------------------------ outbox

  async enqueue(
    item: Pick<OutboxItem, 'accountId' | 'kind' | 'recipient' | 'subject' | 'body'>,
    now: number,
  ): Promise<number> {
    const a = item.accountId === null ? '' : String(item.accountId);
    return Number(await this.run('enqueue', a, item.kind, item.recipient, item.subject, item.body, num(now)));
  }

  async dueOutbox(now: number, limit: number): Promise<OutboxItem[]> {
    return ((await this.run('outboxRows', 'due', num(now), limit)) as Reply[][]).map(toOutbox);
  }

  async updateOutbox(
    id: number,
    state: OutboxItem['state'],
    attempts: number,
    nextAt: number,
    error: string | null,
  ): Promise<void> {
    await this.run(
      'updateOutbox',
      id,
      state,
      attempts,
      num(nextAt),
      error ?? '',
      error === null ? '0' : '1',
      Date.now(),
    );
  }

  async listOutbox(accountId: number | null, limit: number): Promise<OutboxItem[]> {
    const a = accountId === null ? 'system' : String(accountId);
    return ((await this.run('outboxRows', 'list', a, limit)) as Reply[][]).map(toOutbox);
  }

  async countOutboxSince(accountId: number, since: number): Promise<number> {
    return Number(await this.send(() => this.redis.zcount(this.k(`outbox:recent:${accountId}`), num(since), '+inf')));
  }

  async outboxCounts(): Promise<Record<string, number>> {
    const h = await this.send(() => this.redis.hgetall(this.k('outbox:states')));
    const out: Record<string, number> = { queued: 0, sent: 0, failed: 0 };
    for (const [state, n] of Object.entries(h)) out[state] = Number(n);
    return out;
  }

  // ------------------------------------------------------------------------------------------------ held messages

  async hold(items: readonly HoldRequest[], now: number): Promise<void> {
    if (items.length === 0) return;
    const args: (string | number)[] = [num(now)];
    for (const h of items) {
      args.push(h.accountId, h.id, `${num(h.expiresAt)}:${num(now)}:${h.data}`, num(h.expiresAt), num(h.limit));
    }
    await this.run('hold', ...args);
  }

  async takeHeld(accountId: number, id: string, now: number): Promise<string[]> {
    return (await this.run('takeHeld', accountId, id, num(now))) as string[];
  }

  async heldSummary(accountId: number): Promise<HeldSummary[]> {
    const rows = (await this.run('heldSummary', accountId)) as [string, number, string | null, number][];
    return rows
      .map(([id, count, oldest, dropped]) => ({
        id,
        count: Number(count),
        oldest: oldest === null ? null : Number(oldest),
        dropped: Number(dropped),
      }))
      .sort((a, b) => byStr(a.id, b.id));
  }

  async heldKeys(): Promise<{ accountId: number; id: string }[]> {
    const devs = await this.send(() => this.redis.smembers(this.k('held:devices')));
    return devs.map((d) => {
      const i = d.indexOf(':');
      return { accountId: Number(d.slice(0, i)), id: d.slice(i + 1) };
    });
  }

  async heldCount(): Promise<number> {
    return Number((await this.send(() => this.redis.get(this.k('held:count')))) ?? 0);
  }

  async purgeHeld(now: number): Promise<number> {
    return Number(await this.run('purgeHeld', num(now)));
  }

  async heldDropped(): Promise<number> {
    return Number((await this.send(() => this.redis.get(this.k('held:dropped')))) ?? 0);
  }

  // ------------------------------------------------------------------------------------------------ devices

  async markSeen(entries: readonly { accountId: number; id: string }[], now: number): Promise<void> {
    if (entries.length === 0) return;
    const args: (string | number)[] = [num(now)];
    for (const e of entries) args.push(e.accountId, e.id);
    await this.run('markSeen', ...args);
  }

  async knownDevices(accountId: number): Promise<{ id: string; lastSeen: number }[]> {
    const h = await this.send(() => this.redis.hgetall(this.k(`seen:${accountId}`)));
    return Object.entries(h)
      .map(([id, t]) => ({ id, lastSeen: Number(t) }))
      .filter((d) => d.lastSeen > 0)
      .sort((a, b) => byStr(a.id, b.id));
  }

  async lastSeen(accountId: number, id: string): Promise<number | null> {
    const t = await this.send(() => this.redis.hget(this.k(`seen:${accountId}`), id));
    return t === null || Number(t) === 0 ? null : Number(t);
  }

  /** Waits for the calls already made, then closes the connection (at once if Redis is away). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.redis.quit(),
        new Promise((resolve) => {
          timer = setTimeout(resolve, CONNECT_TIMEOUT_MS);
        }),
      ]);
    } catch {
      // closing anyway
    } finally {
      clearTimeout(timer);
      this.redis.disconnect();
    }
  }
}
