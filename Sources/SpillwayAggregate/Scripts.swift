/// The Lua scripts the worker runs in Redis (each one atomic there).
enum Scripts {
    /// Commits what a worker read from one stream: the partial figures of each bucket it touched
    /// and the acknowledgement of the entries they come from, all or nothing.
    ///
    /// KEYS: the stream, the group's due set, then one state hash per bucket.
    /// ARGV: group, consumer, partial id, settle (ms), n, the n entry IDs (ascending), then per
    /// bucket hash its partial (encoded `BucketStats`) and its close time (ms, Redis's clock).
    ///
    /// Fenced first: every entry must still be pending with this consumer (not acknowledged, not
    /// claimed by another worker since it was read); else nothing is written and the reply is a
    /// `FENCED` error (the worker drops what it holds and reads its pending entries again). Then
    /// each partial is added to its bucket's hash under an ID of its own (never overwriting
    /// another), the hash is made persistent (a written bucket's hash has a TTL, `keep`; a new
    /// partial keeps it until written again), and the bucket is put in the due set at its close
    /// time; a partial of a bucket closed already puts it `settle` from now (GT: only ever later),
    /// so a bucket still receiving entries after its close (a backlog read, a late batch) is
    /// written once they stop, not after each read. A hash made for a bucket that has closed
    /// already gets `lookup` (its figures may have been written, and its state since expired: the
    /// writer then reads them back to merge). Last, XACK.
    static let commit = """
        local group, consumer, pid = ARGV[1], ARGV[2], ARGV[3]
        local settle = tonumber(ARGV[4])
        local n = tonumber(ARGV[5])
        if n > 0 then
          local p = redis.call('XPENDING', KEYS[1], group, ARGV[6], ARGV[5 + n], n + 64, consumer)
          local mine = {}
          for _, e in ipairs(p) do mine[e[1]] = true end
          for i = 6, 5 + n do
            if not mine[ARGV[i]] then
              return redis.error_reply('FENCED entry ' .. ARGV[i] .. ' of ' .. KEYS[1] .. ' is no longer pending with consumer ' .. consumer)
            end
          end
        end
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local a = 6 + n
        for j = 3, #KEYS do
          local h = KEYS[j]
          local close = tonumber(ARGV[a + 1])
          local due = ARGV[a + 1]
          if now >= close then
            if redis.call('EXISTS', h) == 0 then redis.call('HSET', h, 'lookup', '1') end
            due = string.format('%d', now + settle)
          end
          redis.call('HSET', h, pid, ARGV[a])
          redis.call('PERSIST', h)
          redis.call('ZADD', KEYS[2], 'GT', due, h)
          a = a + 2
        end
        for i = 6, 5 + n, 500 do
          redis.call('XACK', KEYS[1], group, unpack(ARGV, i, math.min(5 + n, i + 499)))
        end
        return n
        """

    /// Deletes the consumers of a group that hold no pending entry and have not been heard of for
    /// ARGV[2] ms (workers gone for good), atomically with the check (a consumer that reads meanwhile
    /// is not deleted, so no pending entry is ever dropped with its consumer).
    /// KEYS: the stream. ARGV: group, idle ms. Reply: how many were deleted.
    static let prune = """
        local cs = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
        local idle = tonumber(ARGV[2])
        local deleted = 0
        for _, c in ipairs(cs) do
          local f = {}
          for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
          if tonumber(f['pending']) == 0 and tonumber(f['idle']) >= idle then
            redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
            deleted = deleted + 1
          end
        end
        return deleted
        """
}
