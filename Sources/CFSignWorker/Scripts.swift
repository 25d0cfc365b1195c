import CFSignCore
import CFSignRedis

/// The worker's Lua scripts. Every key a script touches shares the namespace's `{NS}` hash tag, so
/// they are legal on Redis Cluster; each runs atomically, which is what makes delivery at-least-once.
enum Scripts {
    /// Lua shared by the scripts that write dead entries inside Redis (`take` for oversized jobs,
    /// `reap` for poison jobs). The entry has the shape `ReplyEncoder.dead` writes in Swift
    /// (PROTOCOL.md, "Reply"): the job excerpt is its first 1 KiB, a UTF-8 sequence split by the
    /// cut dropped, bytes that are not UTF-8 written as U+FFFD, escaped as `JSONWriter` escapes.
    /// Written in Lua because the point is that the whole job never reaches a worker.
    private static let deadEntryLua = """
        local function jstr(s)
          local out, i, n = {}, 1, #s
          while i <= n do
            local c = string.byte(s, i)
            if c < 0x80 then
              if c == 34 then out[#out + 1] = '\\\\"'
              elseif c == 92 then out[#out + 1] = '\\\\\\\\'
              elseif c == 10 then out[#out + 1] = '\\\\n'
              elseif c == 13 then out[#out + 1] = '\\\\r'
              elseif c == 9 then out[#out + 1] = '\\\\t'
              elseif c == 8 then out[#out + 1] = '\\\\b'
              elseif c == 12 then out[#out + 1] = '\\\\f'
              elseif c < 32 then out[#out + 1] = string.format('\\\\u%04x', c)
              else out[#out + 1] = string.char(c) end
              i = i + 1
            else
              local len = 0
              if c >= 0xC2 and c <= 0xDF then len = 2
              elseif c >= 0xE0 and c <= 0xEF then len = 3
              elseif c >= 0xF0 and c <= 0xF4 then len = 4 end
              local ok = len > 0 and i + len - 1 <= n
              if ok then
                for k = 1, len - 1 do
                  local b = string.byte(s, i + k)
                  if b < 0x80 or b > 0xBF then ok = false; break end
                end
              end
              if ok then
                local b1 = string.byte(s, i + 1)
                if (c == 0xE0 and b1 < 0xA0) or (c == 0xED and b1 > 0x9F) or (c == 0xF0 and b1 < 0x90) or (c == 0xF4 and b1 > 0x8F) then ok = false end
              end
              if ok then out[#out + 1] = string.sub(s, i, i + len - 1); i = i + len
              else out[#out + 1] = '\\239\\191\\189'; i = i + 1 end
            end
          end
          return '"' .. table.concat(out) .. '"'
        end
        local function excerpt(job)
          local cut = \(ReplyEncoder.deadJobExcerpt)
          if #job <= cut then return job end
          local s = string.sub(job, 1, cut)
          local i, back = cut, 0
          while i >= 1 and back < 3 and string.byte(s, i) >= 0x80 and string.byte(s, i) <= 0xBF do i = i - 1; back = back + 1 end
          if i >= 1 and string.byte(s, i) >= 0xC0 then
            local c = string.byte(s, i)
            local need = 2
            if c >= 0xF0 then need = 4 elseif c >= 0xE0 then need = 3 end
            if cut - i + 1 < need then s = string.sub(s, 1, i - 1) end
          end
          return s
        end
        local function dead(deadKey, maxLen, job, code, message, worker, recoveries)
          local t = redis.call('TIME')
          local at = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
          local entry = '{"error":{"code":' .. jstr(code) .. ',"message":' .. jstr(message) .. '},"job":' .. jstr(excerpt(job))
            .. ',"worker":' .. jstr(worker) .. ',"at":' .. at
          if recoveries then entry = entry .. ',"recoveries":' .. string.format('%d', recoveries) end
          redis.call('LPUSH', deadKey, entry .. '}')
          redis.call('LTRIM', deadKey, 0, maxLen - 1)
        end

        """

    /// take(jobs, inflight, workers, dead, recoveries; n, id, max_bytes, dead_max, after_blmove,
    /// budget): move up to n jobs from the queue's right end into the in-flight list, atomically,
    /// so a crash between pop and push cannot lose a job. Bounded by bytes as well as by count:
    /// - it stops once it has popped `budget` bytes (`takeByteBudget`), so one call never copies
    ///   more than that plus one element into Lua, however large the jobs producers push: Redis
    ///   stays responsive for every other client (a count alone let 1000 jobs of 1 MiB stall it);
    /// - a job over `max_bytes` never reaches the worker: it goes to `{NS}:dead` here, and the
    ///   worker gets only `{length, excerpt}` (to count and audit it);
    /// - with `after_blmove` = 1, the in-flight list's head is the job BLMOVE just delivered
    ///   whole; if it is oversized it is dead-lettered the same way (the worker drops its copy);
    /// - a suspect (a job recovered from a dead worker before, so in `{NS}:recoveries`) is always
    ///   taken alone, so if it kills this worker too, no other job is recovered with it and
    ///   blamed for it (PROTOCOL.md, "Poison jobs").
    /// It (re-)registers the worker when it takes jobs, so an in-flight list that receives a batch
    /// belongs to a registered worker. Returns the `{length, excerpt}` pairs first, then the jobs.
    static let take = RedisScript(name: "take", source: deadEntryLua + """
        local n, limit, deadMax = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[4])
        local afterBlmove = ARGV[5] == '1'
        local result, taken = {}, {}
        local suspects = redis.call('HLEN', KEYS[5]) > 0
        local function suspect(item) return suspects and redis.call('HEXISTS', KEYS[5], redis.sha1hex(item)) == 1 end
        local function oversized(item)
          dead(KEYS[4], deadMax, item, 'invalid_job', 'job is ' .. #item .. ' bytes; at most ' .. limit .. ' are read', ARGV[2], nil)
          result[#result + 1] = {#item, excerpt(item)}
        end
        local alone = false
        if afterBlmove then
          local head = redis.call('LINDEX', KEYS[2], 0)
          if head and #head > limit then
            redis.call('LPOP', KEYS[2])
            oversized(head)
            afterBlmove = false
          elseif head and suspect(head) then
            return result
          end
        end
        local budget = tonumber(ARGV[6])
        while n >= 1 and budget > 0 do
          local item = redis.call('RPOP', KEYS[1])
          if not item then break end
          n = n - 1
          budget = budget - #item
          if #item > limit then
            oversized(item)
          elseif suspect(item) then
            if #taken == 0 and not afterBlmove then taken[1] = item else redis.call('RPUSH', KEYS[1], item) end
            break
          else
            taken[#taken + 1] = item
          end
        end
        if #taken > 0 then
          redis.call('SADD', KEYS[3], ARGV[2])
          redis.call('LPUSH', KEYS[2], unpack(taken))
          for _, item in ipairs(taken) do result[#result + 1] = item end
        end
        return result
        """)

    /// replies(inflight, dead, recoveries, target_1 … target_t; ttl, dead_max, then per job: target
    /// index (1…t, or 0 for a dead entry), raw, payload): a whole batch answered in ONE script call,
    /// each job answered only if this worker still holds it (PROTOCOL.md, "Reliability"); an answered
    /// job's recovery count goes. Per job: -2 (nothing written) when
    /// its `reply_to` holds something other than a list, 1 when answered, 0 when the job was no
    /// longer ours (requeued after a stall: not answered twice). One call instead of one per job
    /// saves Redis a script invocation, a TYPE, an EXPIRE and an RPUSH per job: replies to one
    /// `reply_to` go out in one RPUSH (in job order) and one EXPIRE, dead entries in one LPUSH and
    /// one LTRIM. Every type is checked before any write (Lua does not roll back). The LREMs scan
    /// from the in-flight list's tail, where the oldest batch (the one being answered) lies in job
    /// order, so each finds its job at once: no O(batch²) scan.
    static let replies = RedisScript(name: "replies", source: """
        local ttl, deadMax = ARGV[1], tonumber(ARGV[2])
        local targets = #KEYS - 3
        local usable = {}
        for t = 1, targets do
          local kind = redis.call('TYPE', KEYS[3 + t])['ok']
          usable[t] = kind == 'list' or kind == 'none'
        end
        local recoveries = redis.call('HLEN', KEYS[3]) > 0
        local results, pushes, dead = {}, {}, {}
        local jobs = (#ARGV - 2) / 3
        for j = 1, jobs do
          local t, raw = tonumber(ARGV[3 * j]), ARGV[3 * j + 1]
          if t > 0 and not usable[t] then
            results[j] = -2
          elseif redis.call('LREM', KEYS[1], -1, raw) == 1 then
            if t > 0 then
              local p = pushes[t]
              if not p then p = {}; pushes[t] = p end
              p[#p + 1] = ARGV[3 * j + 2]
            else
              dead[#dead + 1] = ARGV[3 * j + 2]
            end
            if recoveries then redis.call('HDEL', KEYS[3], redis.sha1hex(raw)) end
            results[j] = 1
          else
            results[j] = 0
          end
        end
        for t, p in pairs(pushes) do
          for i = 1, #p, 1000 do redis.call('RPUSH', KEYS[3 + t], unpack(p, i, math.min(i + 999, #p))) end
          redis.call('EXPIRE', KEYS[3 + t], ttl)
        end
        if #dead > 0 then
          for i = 1, #dead, 1000 do redis.call('LPUSH', KEYS[2], unpack(dead, i, math.min(i + 999, #dead))) end
          redis.call('LTRIM', KEYS[2], 0, deadMax - 1)
        end
        return results
        """)

    /// reap(workers, heartbeat, inflight, jobs, dead, recoveries; id, max_recoveries, reaper,
    /// dead_max): if the worker's heartbeat has expired, move its in-flight jobs back to the end
    /// of the queue that is popped next (oldest first) and deregister it. Each job's recoveries
    /// are counted in `{NS}:recoveries` (by SHA-1 of its bytes, so the hash stays small); a job
    /// recovered more than `max_recoveries` times goes to `{NS}:dead` as `poison_job` instead of
    /// taking down the next worker. Two reapers cannot both requeue: the second finds the list
    /// empty. Returns {moved, poisoned}, or -1 when the worker is alive.
    static let reap = RedisScript(name: "reap", source: deadEntryLua + """
        if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
        local maxRecoveries, deadMax = tonumber(ARGV[2]), tonumber(ARGV[4])
        local moved, poisoned = 0, 0
        while true do
          local item = redis.call('LPOP', KEYS[3])
          if not item then break end
          local h = redis.sha1hex(item)
          local n = redis.call('HINCRBY', KEYS[6], h, 1)
          if n > maxRecoveries then
            redis.call('HDEL', KEYS[6], h)
            dead(KEYS[5], deadMax, item, 'poison_job', 'job was in the in-flight list of ' .. n .. ' workers that died (max_recoveries = ' .. maxRecoveries .. '); it is not handed to another worker', ARGV[3], n)
            poisoned = poisoned + 1
          else
            redis.call('RPUSH', KEYS[4], item)
            moved = moved + 1
          end
        end
        if moved > 0 then redis.call('EXPIRE', KEYS[6], \(recoveriesLifetime)) end
        redis.call('SREM', KEYS[1], ARGV[1])
        return {moved, poisoned}
        """)

    /// Bytes one take call pops at most (plus one element): 64 ordinary jobs are a few KiB, so this
    /// only bites when producers push huge jobs, which are then dead-lettered a few per call.
    static let takeByteBudget = 4 << 20

    /// Seconds `{NS}:recoveries` outlives the last recovery: counts of jobs that were never
    /// answered (e.g. deleted by an operator) do not stay forever.
    static let recoveriesLifetime = 7 * 86400
}
