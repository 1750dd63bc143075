-- libdss schema version 4: the lock path at the database's own speed;
-- history with a bound, or off.
--
-- Applied after 0003 (same rules: idempotent, one transaction, advisory lock).
-- Held locks, leases, waiters, history and kv rows are kept as they are;
-- tokens keep coming from dss.lock_token_seq, so every id's next token is
-- above its last one.
--
-- Where the time went (pgbench and pg_stat_wal; scripts/wal_per_pair.sh
-- shows it): schema 3 wrote 12 WAL records, 2 000 bytes per lock + unlock
-- pair, most of it full-page images of the history index on (id, seq),
-- whose insertions land on random pages; and every acquisition probed that
-- index again, from PL/pgSQL, to keep tokens increasing. Now:
-- * the history has no index on the hot path (only BRIN on `at`, which
--   costs nothing while the newest range is unsummarised): about 10
--   records, 800 bytes per pair, no full-page images (the minimal pair of
--   INSERT and DELETE: 5 records, 300 bytes);
-- * tokens increase per id without reading the history: see "Tokens";
-- * dss_lock is plain SQL (src/sql/lock.rs), no PL/pgSQL.

BEGIN;
SET LOCAL client_min_messages = warning;
DO $$ BEGIN PERFORM pg_advisory_xact_lock(7235443); END $$;

-- The history keeps its rows and columns; `seq` still orders it (identity),
-- without an index. `dssctl history ID` reads the table (bounded by the
-- retention below).
DROP INDEX IF EXISTS dss.lock_history_id;
ALTER TABLE dss.lock_history DROP CONSTRAINT IF EXISTS lock_history_pkey;

-- Settings kept in the database, read by the statements and dssctl:
--   history            'on' (default) or 'off': with 'off', no call writes
--                      history rows (a trigger drops them, see below);
--   history_retention  an interval, default '30 days'; `dssctl history
--                      prune` deletes rows older than that; '0' keeps all.
-- Change them with UPDATE, e.g.
--   UPDATE dss.settings SET value = 'off' WHERE key = 'history';
CREATE TABLE IF NOT EXISTS dss.settings (
    key   text PRIMARY KEY CHECK (key IN ('history', 'history_retention')),
    value text NOT NULL
);

-- Checks a value and applies 'history': while it is 'off', a BEFORE INSERT
-- trigger on dss.lock_history drops every row. While 'on' there is no
-- trigger at all, so keeping the history costs its insert and nothing more
-- (a settings lookup in every statement measured 5 % of a pair).
CREATE OR REPLACE FUNCTION dss.settings_apply()
RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    ok boolean;
BEGIN
    IF NEW.key = 'history' THEN
        IF NEW.value NOT IN ('on', 'off') THEN
            RAISE EXCEPTION 'dss.settings: history must be on or off, not "%"', NEW.value
                USING ERRCODE = '22023';
        END IF;
        IF NEW.value = 'off' THEN
            CREATE OR REPLACE TRIGGER lock_history_off BEFORE INSERT ON dss.lock_history
                FOR EACH ROW EXECUTE FUNCTION dss.lock_history_drop();
        ELSE
            DROP TRIGGER IF EXISTS lock_history_off ON dss.lock_history;
        END IF;
    ELSIF NEW.key = 'history_retention' THEN
        BEGIN
            ok := NEW.value::interval >= interval '0';
        EXCEPTION WHEN OTHERS THEN   -- not an interval
            ok := false;
        END;
        IF NOT ok THEN
            RAISE EXCEPTION 'dss.settings: history_retention must be an interval >= 0 (''30 days'', ''0''), not "%"',
                NEW.value USING ERRCODE = '22023';
        END IF;
    END IF;
    RETURN NEW;
END
$fn$;

CREATE OR REPLACE FUNCTION dss.lock_history_drop()
RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    RETURN NULL;
END
$fn$;

CREATE OR REPLACE TRIGGER settings_apply BEFORE INSERT OR UPDATE ON dss.settings
    FOR EACH ROW EXECUTE FUNCTION dss.settings_apply();

INSERT INTO dss.settings (key, value) VALUES ('history', 'on'), ('history_retention', '30 days')
ON CONFLICT (key) DO NOTHING;

-- Tokens. A token is drawn (nextval) when the acquiring row is built,
-- before the INSERT checks the primary key, where it may wait for a
-- concurrent release of the id to commit; meanwhile a third caller could
-- take and release the id with a later token, and ours would then be
-- older than the id's last one. Schema 2 compared each new token with the
-- id's last one in the history. Now every acquisition first takes a
-- transaction advisory lock on the id's bucket,
--     pg_advisory_xact_lock(7235443, hashtext(id) & 4095),
-- held to its commit, and draws its token after it: acquisitions of one id
-- never overlap, so their tokens follow their commits. Releases take no such
-- lock. 4 096 buckets: unrelated ids share one rarely (8 concurrent callers:
-- 0.2 %), and dss_lock_many takes at most 4 096 locks, whatever its size
-- (per-id locks would exhaust the server's lock table near 30 000 ids).
-- Batches take their buckets in ascending order, single calls one bucket,
-- and neither waits for a bucket while it holds a row lock, so the locks
-- cannot deadlock.

-- Takes lock p_id for p_owner with a lease of p_ttl_ms (0: none) if it is
-- free or its lease expired; returns the new token, or NULL if it is held.
-- The library runs the same statement inline (src/sql/lock.rs, LOCK); this
-- function is kept for callers of schema 2 and for SQL users.
CREATE OR REPLACE FUNCTION dss.lock_acquire(p_id text, p_owner text, p_ttl_ms bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    tok bigint;
    exp timestamptz := CASE WHEN p_ttl_ms > 0 THEN now() + p_ttl_ms * interval '1 millisecond' END;
BEGIN
    WITH bucket AS MATERIALIZED (
        SELECT pg_advisory_xact_lock(7235443, hashtext(p_id) & 4095)),
    tko AS (
        UPDATE dss.locks
           SET owner = p_owner, token = nextval('dss.lock_token_seq'), locked_at = now(),
               ts = now(), ttl_ms = p_ttl_ms, expires_at = exp
         WHERE id = p_id AND expires_at <= now() AND EXISTS (SELECT 1 FROM bucket)
        RETURNING token),
    ins AS (
        INSERT INTO dss.locks (id, owner, token, ttl_ms, expires_at)
        SELECT p_id, p_owner, nextval('dss.lock_token_seq'), p_ttl_ms, exp
          FROM bucket WHERE NOT EXISTS (SELECT 1 FROM tko)
        ON CONFLICT (id) DO NOTHING
        RETURNING token),
    got AS (
        SELECT token, 'takeover' AS event FROM tko
        UNION ALL SELECT token, 'acquire' FROM ins),
    hist AS (
        INSERT INTO dss.lock_history (event, id, owner, token)
        SELECT event, p_id, p_owner, token FROM got)
    SELECT token INTO tok FROM got;
    RETURN tok;
END
$fn$;

-- dss_lock_many(): all ids or none. The buckets of the ids are locked in
-- ascending order, then rows are taken in id order (INSERT ... ORDER BY id
-- ON CONFLICT), so overlapping batches wait for each other in the same
-- order and cannot deadlock. On a conflict everything done so far is rolled
-- back (sub-transaction) and the first conflicting id, by its position in
-- p_ids (1-based), is returned with its holder. No row: taken.
CREATE OR REPLACE FUNCTION dss.lock_many(p_ids text[], p_owner text, p_ttl_ms bigint)
RETURNS TABLE (conflict_ord bigint, holder text)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    c_ord bigint;
    c_id text;
    c_holder text;
    exp timestamptz := CASE WHEN p_ttl_ms > 0 THEN now() + p_ttl_ms * interval '1 millisecond' END;
BEGIN
    PERFORM count(pg_advisory_xact_lock(7235443, b.bucket))
       FROM (SELECT DISTINCT hashtext(r.id) & 4095 AS bucket FROM unnest(p_ids) AS r(id)
              ORDER BY 1) AS b;
    -- Every id free, the common case: a plain INSERT, half the work of
    -- ON CONFLICT (no speculative insertion). A held or expired id fails
    -- it (caught: nothing is logged, nothing kept), then the general path.
    BEGIN
        WITH ins AS (
            INSERT INTO dss.locks (id, owner, token, ttl_ms, expires_at)
            SELECT r.id, p_owner, nextval('dss.lock_token_seq'), p_ttl_ms, exp
              FROM unnest(p_ids) AS r(id)
             ORDER BY r.id COLLATE "C"
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
VALUES (4, 'fast lock path, history retention and off switch')
ON CONFLICT (version) DO NOTHING;

COMMIT;
