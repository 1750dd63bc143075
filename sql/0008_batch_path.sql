-- libdss schema version 8: the batch path and the history without an
-- index.
--
-- Applied after 0007 (same rules: idempotent, one transaction, advisory
-- lock). Held locks, leases, tokens, waiters, history and kv rows are kept.
--
-- Where a dss_lock_many of 10 000 free ids spent its time (backend CPU,
-- /proc/self/schedstat read with pg_read_file before and after each
-- statement, median of 10, freshly vacuumed tables): a bare INSERT ...
-- SELECT unnest($1) of the same ids into a phobos-shaped table 29 ms; the
-- lock rows with their tokens 35 ms; with the history rows as well, in one
-- statement, 51 ms, plus 9.5 ms for the BRIN index on `at` (PostgreSQL 15
-- reads the index's meta and revmap pages for every row inserted,
-- summarised or not: 16.6 ms for 10 000 rows into a copy of the table
-- without it, 26.1 with it); schema 7's dss.lock_many 71 ms without the
-- index, of which 3 to 4 ms went to the DISTINCT of the bucket numbers and
-- 2 ms to sorting the ids; this one 65 ms. So:
-- * dss.lock_history has no index at all. `dssctl history prune` walks the
--   table in physical order instead (a TID range scan from where the last
--   batch stopped: each batch reads only what it needs, the whole run reads
--   the table once), and the readers (`dssctl history ID`) read it as they
--   already did (the history is bounded by its retention). A pair writes
--   two history rows, so it also spends about 2 us less (1 us a row, above).
-- * dss_lock_many's fast path (every id free: a plain INSERT) inserts in
--   the caller's order: only statements that lock rows already there need
--   id order to rule out deadlocks (the general path below keeps it). The
--   fast path's inserts wait only for a concurrent release of an id, and
--   neither a release nor anything a release can wait for ever waits for
--   what the batch holds (its buckets, its own new rows). Its bucket locks
--   are taken in ascending bucket order as before, without a DISTINCT.

BEGIN;
SET LOCAL client_min_messages = warning;
DO $$ BEGIN PERFORM pg_advisory_xact_lock(7235443); END $$;

DROP INDEX IF EXISTS dss.lock_history_at;

CREATE OR REPLACE FUNCTION dss.lock_many(p_ids text[], p_owner text, p_ttl_ms bigint)
RETURNS TABLE (conflict_ord bigint, holder text)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    c_ord bigint;
    c_id text;
    c_holder text;
    exp timestamptz := CASE WHEN p_ttl_ms > 0 THEN now() + p_ttl_ms * interval '1 millisecond' END;
BEGIN
    -- The buckets in ascending order; a bucket met again is already held
    -- (a lookup in the backend's own lock table), cheaper than a DISTINCT.
    PERFORM count(pg_advisory_xact_lock(7235443, b.bucket))
       FROM (SELECT hashtext(r.id) & 4095 AS bucket FROM unnest(p_ids) AS r(id)
              ORDER BY 1) AS b;
    -- Every id free, the common case: a plain INSERT, half the work of
    -- ON CONFLICT (no speculative insertion), in the caller's order (see
    -- the header). A held or expired id fails it (caught: nothing is
    -- logged, nothing kept), then the general path.
    BEGIN
        WITH ins AS (
            INSERT INTO dss.locks (id, owner, token, ttl_ms, expires_at)
            SELECT r.id, p_owner, nextval('dss.lock_token_seq'), p_ttl_ms, exp
              FROM unnest(p_ids) AS r(id)
            RETURNING id, token)
        INSERT INTO dss.lock_history (event, id, owner, token)
        SELECT 'acquire', i.id, p_owner, i.token FROM ins AS i;
        RETURN;
    EXCEPTION WHEN unique_violation THEN
        NULL;
    END;
    BEGIN
        WITH acq AS (
            INSERT INTO dss.locks AS l (id, owner, token, ttl_ms, expires_at)
            SELECT r.id, p_owner, nextval('dss.lock_token_seq'), p_ttl_ms, exp
              FROM unnest(p_ids) AS r(id)
             ORDER BY r.id COLLATE "C"
            ON CONFLICT (id) DO UPDATE
               SET owner = excluded.owner, token = nextval('dss.lock_token_seq'), locked_at = now(),
                   ts = now(), ttl_ms = excluded.ttl_ms, expires_at = excluded.expires_at
             WHERE l.expires_at <= now()
            RETURNING l.id, l.token, (l.xmax = 0) AS fresh),
        hist AS (
            INSERT INTO dss.lock_history (event, id, owner, token)
            SELECT CASE WHEN a.fresh THEN 'acquire' ELSE 'takeover' END, a.id, p_owner, a.token
              FROM acq AS a),
        miss AS (
            SELECT r.ord, r.id
              FROM unnest(p_ids) WITH ORDINALITY AS r(id, ord)
             WHERE r.id NOT IN (SELECT id FROM acq)
             ORDER BY r.ord LIMIT 1)
        SELECT m.ord, m.id INTO c_ord, c_id
          FROM (SELECT 1) AS one LEFT JOIN miss AS m ON true;
        IF c_ord IS NOT NULL THEN
            -- A new snapshot: the holder may have committed after ours.
            SELECT l.owner INTO c_holder FROM dss.locks AS l WHERE l.id = c_id;
            -- Undo what was taken, keep c_ord and c_holder (plain variables).
            RAISE EXCEPTION USING ERRCODE = 'DSSCF';
        END IF;
    EXCEPTION WHEN SQLSTATE 'DSSCF' THEN
        RETURN QUERY SELECT c_ord, c_holder;
        RETURN;
    END;
END
$fn$;

INSERT INTO dss.schema_info (version, description)
VALUES (8, 'batch path in the caller''s order, history without an index')
ON CONFLICT (version) DO NOTHING;

COMMIT;
