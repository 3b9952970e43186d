"""The Lua scripts of a corpus shard: each runs atomically on the shard's one slot.

Every script gets the shard prefix (``keys.corpus_shard``) as its only key and builds the
shard's other keys from the suffixes in ``keys.CORPUS_SUFFIXES``. Writes happen only in
``APPLY`` (and ``SWAP``), only when the shard is still at the generation and store
position the plan was made from (compare-and-set), so a plan is applied exactly once
and a shard's position only moves forward through its store.

LSH buckets grow by linear hashing: bucket ``b`` of a field ``f`` is ``f mod (16 * 2^L)``,
or ``f mod (16 * 2^(L+1))`` when that is below the split pointer; when the shard holds
more than ``LOAD`` entries per bucket, the bucket at the pointer is split in two. So a
bucket holds ~32-64 entries at any corpus size: Redis keeps such small hashes as compact
listpacks (~10 bytes an entry), and no capacity has to be chosen up front.
"""

from __future__ import annotations

from redundancy.core.corpus import FEATURE_RECORD, SATURATED
from redundancy.keys import CORPUS_SUFFIXES
from redundancy.kv.ops import Script

RECORDS_PER_CHUNK = 327
"""Feature records per string key: 32,700 bytes, just inside jemalloc's 32 KiB class.
A chunk is created whole (SET of zeros, then SETRANGE inside it), because a string grown
by SETRANGE is preallocated at twice its length."""

BUCKET_BASE = 16
BUCKET_LOAD = 64
"""Average entries per bucket above which a bucket is split (listpacks hold up to 128)."""

_COMMON = """
local P = KEYS[1]
local S_GEN, S_EVENTS = '{gen}', '{events}'
local S_META, S_IDS, S_DOCS, S_FEAT, S_BUCKET = '{meta}', '{ids}', '{docs}', '{feat}', '{bucket}'
local BASE, LOAD, REC, SAT, RPC = {base}, {load}, {rec}, {sat}, {rpc}
local function live_gen() return redis.call('GET', P .. S_GEN) or '0' end
local function gkey(gen, part) return P .. 'g' .. gen .. ':' .. part end
-- the chunk key of a slot's feature record, and the record's offset in it
local function feat_at(gen, slot)
  local s = tonumber(slot)
  return gkey(gen, S_FEAT) .. math.floor(s / RPC), (s % RPC) * REC
end
local function lh_state(meta)
  local s = redis.call('HMGET', meta, 'level', 'split', 'entries')
  return tonumber(s[1] or '0'), tonumber(s[2] or '0'), tonumber(s[3] or '0')
end
-- the bucket key of a band field (a number) under linear hashing (module docstring)
local function bucket_keys(bprefix, level, split)
  local n = BASE * 2 ^ level
  local n2 = 2 * n
  return function(f)
    local b = f % n
    if b < split then b = f % n2 end
    return bprefix .. b
  end
end
""".format(
    gen=CORPUS_SUFFIXES["gen"],
    events=CORPUS_SUFFIXES["events"],
    meta=CORPUS_SUFFIXES["meta"],
    ids=CORPUS_SUFFIXES["ids"],
    docs=CORPUS_SUFFIXES["docs"],
    feat=CORPUS_SUFFIXES["feat"],
    bucket=CORPUS_SUFFIXES["bucket"],
    base=BUCKET_BASE,
    load=BUCKET_LOAD,
    rec=FEATURE_RECORD.itemsize,
    sat=SATURATED,
    rpc=RECORDS_PER_CHUNK,
)

READ = Script(
    "corpus_read",
    _COMMON
    + """
-- ARGV: generation ('' = the live one), then document ids.
-- Returns {gen, position, next slot, live documents, ids value or false ...}.
local gen = ARGV[1]
if gen == '' then gen = live_gen() end
local meta = redis.call('HMGET', gkey(gen, S_META), 'pos', 'next', 'live')
local out = {gen, meta[1] or '', meta[2] or '0', meta[3] or '0'}
if #ARGV > 1 then
  local found = redis.call('HMGET', gkey(gen, S_IDS), unpack(ARGV, 2))
  for i = 1, #found do out[#out + 1] = found[i] end
end
return out
""",
)

TEXTS = Script(
    "corpus_texts",
    _COMMON
    + """
-- ARGV: generation, then slots. Returns {'ok', docs value or false ...} or {'stale'}.
if ARGV[1] ~= live_gen() and redis.call('EXISTS', gkey(ARGV[1], S_META)) == 0 then
  return {'stale'}
end
local out = {'ok'}
if #ARGV > 1 then
  local found = redis.call('HMGET', gkey(ARGV[1], S_DOCS), unpack(ARGV, 2))
  for i = 1, #found do out[#out + 1] = found[i] end
end
return out
""",
)

APPLY = Script(
    "corpus_apply",
    _COMMON
    + """
-- ARGV: 1 generation, 2 expected position, 3 new position ('' = the last appended event),
-- 4 next slot, 5 live delta, 6 puts, 7 deletes, 8 band adds, 9 band removes, 10 events,
-- then per put (id, slot, digest, text, record), per delete (id, slot), per slot with
-- band fields to add or remove (slot, comma-separated fields), per event its stream
-- entry (the number of values, then field, value, field, value ...: WireMessage.fields).
local gen = ARGV[1]
local live = live_gen()
local meta = gkey(gen, S_META)
local pos = redis.call('HGET', meta, 'pos') or ''
if gen ~= live and redis.call('HGET', meta, 'building') ~= '1' then
  return {'stale', pos, live}
end
if pos ~= ARGV[2] then return {'stale', pos, live} end
local new_pos = ARGV[3]
local nput, ndel, nadd, nrem, nev =
  tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local i = 11
local first_put, first_del = i, i + 5 * nput
local first_add = first_del + 2 * ndel
local first_rem = first_add + 2 * nadd
local first_ev = first_rem + 2 * nrem
local appended = {}
if nev > 0 then
  local stream = P .. S_EVENTS
  local tail = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  local last = ''
  if #tail > 0 then last = tail[1][1] end
  if last ~= pos then return {'lag', pos, last} end
  local a = first_ev
  for e = 1, nev do
    local count = tonumber(ARGV[a])
    appended[#appended + 1] = redis.call('XADD', stream, '*', unpack(ARGV, a + 1, a + count))
    a = a + 1 + count
  end
  new_pos = appended[#appended]
end
local ids, docs = gkey(gen, S_IDS), gkey(gen, S_DOCS)
local zero = string.rep(string.char(0), REC)
for d = 0, ndel - 1 do
  local a = first_del + 2 * d
  redis.call('HDEL', ids, ARGV[a])
  redis.call('HDEL', docs, ARGV[a + 1])
  local key, offset = feat_at(gen, ARGV[a + 1])
  redis.call('SETRANGE', key, offset, zero)
end
for p = 0, nput - 1 do
  local a = first_put + 5 * p
  redis.call('HSET', ids, ARGV[a], ARGV[a + 1] .. ':' .. ARGV[a + 2])
  redis.call('HSET', docs, ARGV[a + 1], ARGV[a] .. '\\0' .. ARGV[a + 3])
  local key, offset = feat_at(gen, ARGV[a + 1])
  if redis.call('EXISTS', key) == 0 then
    redis.call('SET', key, string.rep(string.char(0), RPC * REC))
  end
  redis.call('SETRANGE', key, offset, ARGV[a + 4])
end
local level, split, entries = lh_state(meta)
local bprefix = gkey(gen, S_BUCKET)
local bucket = bucket_keys(bprefix, level, split)
for r = 0, nrem - 1 do
  local a = first_rem + 2 * r
  local slot = ARGV[a]
  for f in string.gmatch(ARGV[a + 1], '[^,]+') do
    local key = bucket(tonumber(f))
    local v = redis.call('HGET', key, f)
    if v == slot then
      redis.call('HDEL', key, f)
      entries = entries - 1
    elseif v then
      local kept, gone = {}, false
      for tok in string.gmatch(v, '[^,]+') do
        if not gone and tok == slot then gone = true else kept[#kept + 1] = tok end
      end
      if gone then
        entries = entries - 1
        redis.call('HSET', key, f, table.concat(kept, ','))
      end
    end
  end
end
for x = 0, nadd - 1 do
  local a = first_add + 2 * x
  local slot = ARGV[a]
  for f in string.gmatch(ARGV[a + 1], '[^,]+') do
    local key = bucket(tonumber(f))
    if redis.call('HSETNX', key, f, slot) == 0 then
      redis.call('HSET', key, f, redis.call('HGET', key, f) .. ',' .. slot)
    end
    entries = entries + 1
  end
end
local n = BASE * 2 ^ level
while entries > LOAD * (n + split) do
  -- split the bucket at the pointer: its entries whose field mod 2n is not the pointer
  -- move to bucket pointer + n (both rewritten whole: cheaper than deleting fields)
  local src = bprefix .. split
  local all = redis.call('HGETALL', src)
  local keep, move = {}, {}
  for e = 1, #all, 2 do
    local into = move
    if tonumber(all[e]) % (2 * n) == split then into = keep end
    into[#into + 1] = all[e]
    into[#into + 1] = all[e + 1]
  end
  if #move > 0 then
    redis.call('DEL', src)
    if #keep > 0 then redis.call('HSET', src, unpack(keep)) end
    redis.call('HSET', bprefix .. (split + n), unpack(move))
  end
  split = split + 1
  if split == n then
    level, split, n = level + 1, 0, 2 * n
  end
end
redis.call('HSET', meta, 'pos', new_pos, 'next', ARGV[4], 'level', level, 'split', split,
           'entries', entries)
redis.call('HINCRBY', meta, 'live', tonumber(ARGV[5]))
return {'ok', new_pos, unpack(appended)}
""",
)

QUERY = Script(
    "corpus_query",
    _COMMON
    + """
-- ARGV: 1 threshold, 2 query length, 3 query histogram (48 little-endian uint16), then
-- band fields. Returns {docs value, bands hit, ...} of the candidates that bounds 1-2
-- (length, histogram) cannot rule out, from the live generation.
local gen = live_gen()
local meta = gkey(gen, S_META)
local level, split = lh_state(meta)
local bucket = bucket_keys(gkey(gen, S_BUCKET), level, split)
local hits, order = {}, {}
for a = 4, #ARGV do
  local f = ARGV[a]
  local v = redis.call('HGET', bucket(tonumber(f)), f)
  if v then
    for tok in string.gmatch(v, '[^,]+') do
      if hits[tok] then hits[tok] = hits[tok] + 1
      else hits[tok] = 1; order[#order + 1] = tok end
    end
  end
end
if #order == 0 then return {} end
local t, la = tonumber(ARGV[1]), tonumber(ARGV[2])
local qh = {struct.unpack('<' .. string.rep('H', 48), ARGV[3])}
local docs = gkey(gen, S_DOCS)
local fmt = '<I4' .. string.rep('H', 48)
local out = {}
for _, slot in ipairs(order) do
  local key, offset = feat_at(gen, slot)
  local rec = redis.call('GETRANGE', key, offset, offset + REC - 1)
  if #rec == REC then
    local h = {struct.unpack(fmt, rec)}
    local lb = h[1]
    local cap = math.min(la, lb)
    local need = t * (la + lb) / 2 * (1 - 1e-9)
    if lb > 0 and cap >= need then
      local common = 0
      for k = 1, 48 do
        local x, y = qh[k], h[k + 1]
        if x == SAT then x = cap end
        if y == SAT then y = cap end
        common = common + math.min(x, y, cap)
      end
      if common >= need then
        out[#out + 1] = redis.call('HGET', docs, slot)
        out[#out + 1] = hits[slot]
      end
    end
  end
end
return out
""",
)

FEATURES = Script(
    "corpus_features",
    _COMMON
    + """
-- The live generation and its whole feature table (exact mode scans it in numpy).
local gen = live_gen()
local slots = tonumber(redis.call('HGET', gkey(gen, S_META), 'next') or '0')
local parts, empty = {}, string.rep(string.char(0), RPC * REC)
for c = 0, math.ceil(slots / RPC) - 1 do
  parts[#parts + 1] = redis.call('GET', gkey(gen, S_FEAT) .. c) or empty
end
return {gen, table.concat(parts)}
""",
)

SWAP = Script(
    "corpus_swap",
    _COMMON
    + """
-- ARGV: 1 live generation, 2 rebuilt generation, 3 store end position ('' = read the
-- stream). Makes the rebuilt generation live if it has applied the whole store.
if live_gen() ~= ARGV[1] then return {'moved', live_gen()} end
local meta = gkey(ARGV[2], S_META)
local pos = redis.call('HGET', meta, 'pos') or ''
local last = ARGV[3]
if last == '' then
  local tail = redis.call('XREVRANGE', P .. S_EVENTS, '+', '-', 'COUNT', 1)
  if #tail > 0 then last = tail[1][1] end
end
if pos ~= last then return {'lag', pos, last} end
redis.call('HDEL', meta, 'building')
redis.call('SET', P .. S_GEN, ARGV[2])
return {'ok', pos}
""",
)

SCRIPTS = (READ, TEXTS, APPLY, QUERY, FEATURES, SWAP)
