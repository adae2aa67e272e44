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
    /// reads them back to merge). Then, for each bucket length of the group (`…:buckets`, ARGV after
    /// the buckets' values: that key, the markers' prefix `…:since:`, this worker's lengths) that
    /// this worker does not bucket at, its marker moves to now: entries acknowledged here are not in
    /// that length's aggregates (a rolling restart that adds a length). Last, XACK.
    static let commit = bumpLackingFunction + """
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
        local list = redis.call('GET', ARGV[5 + n + 4 * (#KEYS - 2)])
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
        bump_lacking(list, ARGV[a + 1], a + 2, string.format('%d', now))
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

    /// Moves to now the marker of each bucket length of the group (`…:buckets`) that this worker
    /// does not have (by name): run in the MULTI that writes due buckets, since a worker writes a
    /// due bucket of any length under its own name for that length (a length it lacks, or names
    /// otherwise, as `10s` for `10000ms`), so the group's series of that name miss it. KEYS: the
    /// list, the markers' prefix. ARGV: this worker's lengths.
    static let bumpLacking = bumpLackingFunction + """
        local t = redis.call('TIME')
        local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
        return bump_lacking(redis.call('GET', KEYS[1]), KEYS[2], 1, now)
        """

    /// Lua, the start of `commit` and `bumpLacking`: `bump_lacking(list, prefix, first, now)` sets
    /// the marker (`prefix .. name`) of each name in the comma-separated `list` (nil: none) that is
    /// not among ARGV[first…] (this worker's lengths) to `now`; returns how many it set.
    static let bumpLackingFunction = """
        local function bump_lacking(list, prefix, first, now)
          if not list then return 0 end
          local mine = {}
          for i = first, #ARGV do mine[ARGV[i]] = true end
          local moved = 0
          for b in string.gmatch(list, '[^,]+') do
            if not mine[b] then
              redis.call('SET', prefix .. b, now)
              moved = moved + 1
            end
          end
          return moved
        end

        """

    /// Records, after a worker's first scan, since when the group's entries are bucketed at each
    /// of its bucket lengths (what `spillway query range` needs before it reads an aggregate
    /// instead of the entries). KEYS: the group's bucket list (`…:buckets`, the lengths as written,
    /// comma-separated, of the worker started last), the prefix of the per-length markers
    /// (`…:since:`). ARGV: "1" when this worker's first scan created the group on every stream it
    /// found (so the group reads every stream from its start), else "0"; then this worker's lengths.
    /// - No list (the group's first worker, or the list lost): each length is marked 0 (every entry
    ///   is bucketed at it) when the scan created every group, else now.
    /// - A length not in the list, or without its marker: marked now (entries acknowledged before
    ///   were not bucketed at it).
    /// - A length in the list that this worker lacks: its marker is deleted (no longer bucketed at).
    /// Then the list is this worker's. (Workers still running without a length move its marker to
    /// now at each commit: see `commit`.)
    static let markBuckets = """
        local t = redis.call('TIME')
        local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
        local old = redis.call('GET', KEYS[1])
        local mine = {}
        for i = 2, #ARGV do mine[ARGV[i]] = true end
        local had = {}
        if old then
          for b in string.gmatch(old, '[^,]+') do
            had[b] = true
            if not mine[b] then redis.call('DEL', KEYS[2] .. b) end
          end
        end
        for i = 2, #ARGV do
          local b = ARGV[i]
          if not old then
            if ARGV[1] == '1' then redis.call('SET', KEYS[2] .. b, '0', 'NX') else redis.call('SET', KEYS[2] .. b, now) end
          elseif not had[b] or redis.call('EXISTS', KEYS[2] .. b) == 0 then
            redis.call('SET', KEYS[2] .. b, now)
          end
        end
        redis.call('SET', KEYS[1], table.concat(ARGV, ',', 2))
        return 1
        """
}
