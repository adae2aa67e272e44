/// The Lua scripts the worker runs in Redis (each one atomic there).
enum Scripts {
    /// Commits what a worker read from one stream: its figures of each bucket it touched, and the
    /// acknowledgement of the entries they come from, all or nothing.
    ///
    /// KEYS: the stream, the group's due set, then one state hash per bucket.
    /// ARGV: group, consumer, settle (ms), n, the n entry IDs (ascending), then per bucket hash: the
    /// worker's field in it, "1" when the worker wrote that field before (else "0"), the figures
    /// (encoded `BucketStats`), the bucket's close time (ms, Redis's clock).
    ///
    /// A worker keeps one field per bucket: the figures of every entry it committed to that bucket,
    /// rewritten whole at each commit (so a bucket's hash has about one field per worker, however
    /// many reads it took). Checked first, before anything is written:
    /// - FENCED: every entry must still be pending with this consumer (not acknowledged, not
    ///   claimed by another worker since it was read). The worker then drops what it read and reads
    ///   its own pending entries again.
    /// - STALE i…: a field the worker wrote before must still be there; when it is not (the bucket
    ///   was written and its fields merged into `base`, or its state expired), the worker starts
    ///   that bucket's figures afresh under a new field, from this read's entries only, and commits
    ///   again.
    /// Then each bucket's field is set, the hash made persistent (a written bucket's hash has a TTL,
    /// `keep`; new figures keep it until written again), and the bucket put in the due set at its
    /// close time; figures of a bucket closed already put it `settle` from now (GT: only ever later),
    /// so a bucket still receiving entries after its close (a backlog read, a late batch) is written
    /// once they stop, not after each read. A hash made for a bucket that has closed already gets
    /// `lookup` (its figures may have been written, and its state since expired: the writer then
    /// reads them back to merge). Last, XACK.
    static let commit = """
        local group, consumer = ARGV[1], ARGV[2]
        local settle = tonumber(ARGV[3])
        local n = tonumber(ARGV[4])
        if n > 0 then
          local p = redis.call('XPENDING', KEYS[1], group, ARGV[5], ARGV[4 + n], n + 64, consumer)
          local mine = {}
          for _, e in ipairs(p) do mine[e[1]] = true end
          for i = 5, 4 + n do
            if not mine[ARGV[i]] then
              return redis.error_reply('FENCED entry ' .. ARGV[i] .. ' of ' .. KEYS[1] .. ' is no longer pending with consumer ' .. consumer)
            end
          end
        end
        local stale = {}
        local a = 5 + n
        for j = 3, #KEYS do
          if ARGV[a + 1] == '1' and redis.call('HEXISTS', KEYS[j], ARGV[a]) == 0 then
            stale[#stale + 1] = tostring(j - 2)
          end
          a = a + 4
        end
        if #stale > 0 then
          return redis.error_reply('STALE ' .. table.concat(stale, ' '))
        end
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        a = 5 + n
        for j = 3, #KEYS do
          local h = KEYS[j]
          local close = tonumber(ARGV[a + 3])
          local due = ARGV[a + 3]
          if now >= close then
            if redis.call('EXISTS', h) == 0 then redis.call('HSET', h, 'lookup', '1') end
            due = string.format('%d', now + settle)
          end
          redis.call('HSET', h, ARGV[a], ARGV[a + 2])
          redis.call('PERSIST', h)
          redis.call('ZADD', KEYS[2], 'GT', due, h)
          a = a + 4
        end
        for i = 5, 4 + n, 500 do
          redis.call('XACK', KEYS[1], group, unpack(ARGV, i, math.min(4 + n, i + 499)))
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

    /// Records, at a worker's start, since when the group's entries are bucketed at each of its
    /// bucket lengths (what `spillway query range` needs before it reads an aggregate instead of the
    /// entries). KEYS: the group's bucket list (`…:buckets`, the lengths in ms, comma-separated, as
    /// the last worker started wrote them), the prefix of its per-length markers (`…:since:`).
    /// ARGV: this worker's lengths (ms). A length new to the group (not in the list, or its marker
    /// gone) is marked with now (Redis's clock): entries acknowledged before were not bucketed at it.
    /// With no list at all (the group's first worker) every length is marked 0: the group reads
    /// each stream from its start (XGROUP CREATE … 0), so every entry is bucketed at them. Then
    /// the list is this worker's.
    static let markBuckets = """
        local t = redis.call('TIME')
        local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
        local old = redis.call('GET', KEYS[1])
        local had = {}
        if old then for ms in string.gmatch(old, '[^,]+') do had[ms] = true end end
        for _, ms in ipairs(ARGV) do
          if not old then
            redis.call('SET', KEYS[2] .. ms, '0', 'NX')
          elseif not had[ms] or redis.call('EXISTS', KEYS[2] .. ms) == 0 then
            redis.call('SET', KEYS[2] .. ms, now)
          end
        end
        redis.call('SET', KEYS[1], table.concat(ARGV, ','))
        return 1
        """
}
