import CFSignRedis

/// The worker's Lua scripts. Every key a script touches shares the namespace's `{NS}` hash tag, so
/// they are legal on Redis Cluster; each runs atomically, which is what makes delivery at-least-once.
enum Scripts {
    /// take(jobs, inflight; n): move up to n jobs from the queue's right end into the in-flight list.
    /// A crash between pop and push cannot lose a job because the script is one atomic step.
    /// take(jobs, inflight, workers; n, id): when it takes jobs it also (re-)registers the worker in
    /// the same step, so an in-flight list that receives a batch belongs to a registered worker. (A
    /// single job taken by BLMOVE relies on the heartbeat's SADD, and on the reapers' sweep for
    /// in-flight lists of unregistered workers.)
    static let take = RedisScript(name: "take", source: """
        if tonumber(ARGV[1]) < 1 then return {} end
        local items = redis.call('RPOP', KEYS[1], ARGV[1])
        if not items then return {} end
        redis.call('SADD', KEYS[3], ARGV[2])
        redis.call('LPUSH', KEYS[2], unpack(items))
        return items
        """)

    /// reply(inflight, reply_to; raw, payload, ttl): answer only if this worker still holds the job.
    /// A worker that stalled and had its jobs requeued does not answer them a second time. Returns 1
    /// when answered, 0 when the job was no longer ours, -2 (removing nothing) when `reply_to` holds
    /// something other than a list: Lua does not roll back, so the type is checked before any write.
    static let reply = RedisScript(name: "reply", source: """
        local t = redis.call('TYPE', KEYS[2])['ok']
        if t ~= 'list' and t ~= 'none' then return -2 end
        if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 1 then
          redis.call('RPUSH', KEYS[2], ARGV[2])
          redis.call('EXPIRE', KEYS[2], ARGV[3])
          return 1
        end
        return 0
        """)

    /// dead(inflight, dead; raw, entry, maxlen): move an unanswerable job to the capped dead list.
    static let dead = RedisScript(name: "dead", source: """
        if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 1 then
          redis.call('LPUSH', KEYS[2], ARGV[2])
          redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
          return 1
        end
        return 0
        """)

    /// reap(workers, heartbeat, inflight, jobs; id): if the worker's heartbeat has expired, move its
    /// in-flight jobs back to the end of the queue that is popped next (oldest first) and deregister
    /// it. Two reapers cannot both requeue: the second finds the list empty. Returns the count moved,
    /// or -1 when the worker is alive.
    static let reap = RedisScript(name: "reap", source: """
        if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
        local n = 0
        while redis.call('LMOVE', KEYS[3], KEYS[4], 'LEFT', 'RIGHT') do n = n + 1 end
        redis.call('SREM', KEYS[1], ARGV[1])
        return n
        """)
}
