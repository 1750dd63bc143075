-- libdss schema version 2: leases, fencing tokens, waiting, history.
--
-- Applied after 0001 (same rules: idempotent, one transaction, advisory lock).
-- Existing locks keep working: they get a token, no expiry, and their
-- current timestamp as acquisition time.

BEGIN;
SET LOCAL client_min_messages = warning;
DO $$ BEGIN PERFORM pg_advisory_xact_lock(7235443); END $$;

-- Fencing tokens: every acquisition takes the next value, so a token is
-- greater than every token handed out before it (for any id).
CREATE SEQUENCE IF NOT EXISTS dss.lock_token_seq AS bigint;

ALTER TABLE dss.locks
    ADD COLUMN IF NOT EXISTS token bigint NOT NULL DEFAULT nextval('dss.lock_token_seq'),
    ADD COLUMN IF NOT EXISTS locked_at timestamptz,
    ADD COLUMN IF NOT EXISTS ttl_ms bigint NOT NULL DEFAULT 0,
    -- NULL: never expires. An expired lease counts as free.
    ADD COLUMN IF NOT EXISTS expires_at timestamptz;
UPDATE dss.locks SET locked_at = ts WHERE locked_at IS NULL;
ALTER TABLE dss.locks ALTER COLUMN locked_at SET DEFAULT now();
ALTER TABLE dss.locks ALTER COLUMN locked_at SET NOT NULL;
ALTER SEQUENCE dss.lock_token_seq OWNED BY dss.locks.token;
DO $$ BEGIN
    ALTER TABLE dss.locks ADD CONSTRAINT locks_ttl_range CHECK (ttl_ms >= 0);
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

-- Append-only record of who held what: acquisitions, releases, forced
-- releases, takeovers of expired leases and cleanups (refreshes are not
-- recorded). Written by the same statement as the change it records.
-- `actor` is NULL when the owner acted itself, else who forced it.
-- Prune with: DELETE FROM dss.lock_history WHERE at < now() - interval '90 days';
CREATE TABLE IF NOT EXISTS dss.lock_history (
    seq   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at    timestamptz NOT NULL DEFAULT now(),
    event text NOT NULL CHECK (event IN
              ('acquire', 'takeover', 'release', 'force_release', 'clean')),
    id    text COLLATE "C" NOT NULL,
    owner text COLLATE "C" NOT NULL,
    token bigint NOT NULL,
    actor text
);
CREATE INDEX IF NOT EXISTS lock_history_id ON dss.lock_history (id, seq);
CREATE INDEX IF NOT EXISTS lock_history_at ON dss.lock_history USING brin (at);

-- Callers blocked in dss_lock_wait(), in arrival order (ticket). Rows of a
-- waiter whose session ended, or whose deadline passed, are ignored and
-- purged by the next waiter. Unlogged: after a server crash there are no
-- waiters left anyway.
CREATE UNLOGGED TABLE IF NOT EXISTS dss.lock_waiters (
    ticket      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          text COLLATE "C" NOT NULL,
    owner       text COLLATE "C" NOT NULL,
    backend_pid integer NOT NULL DEFAULT pg_backend_pid(),
    until       timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS lock_waiters_id ON dss.lock_waiters (id, ticket);

-- Tokens: a token is drawn (nextval) when the acquiring row is built, which
-- can be before the statement waits for a concurrent release of the same id
-- to commit. Meanwhile another caller may have taken and released the lock
-- with a later token. So after taking a lock, the last token recorded for
-- the id in the history is compared with ours, and ours is redrawn if it is
-- not greater. Acquisitions of one id are serialised by the row (or its
-- index entry), and each one's history row is written after that check, so
-- by induction the latest history row of an id carries its greatest token.

-- Takes lock p_id for p_owner with a lease of p_ttl_ms (0: none) if it is
-- free or its lease expired; returns the new token, or NULL if it is held.
-- One call, one snapshot per inner statement (READ COMMITTED).
CREATE OR REPLACE FUNCTION dss.lock_acquire(p_id text, p_owner text, p_ttl_ms bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    tok bigint;
    ev text := 'takeover';
    exp timestamptz := CASE WHEN p_ttl_ms > 0 THEN now() + p_ttl_ms * interval '1 millisecond' END;
BEGIN
    -- An expired lease: the row lock makes exactly one of several
    -- concurrent callers succeed (the others re-check a live lease and
    -- skip); nextval is evaluated after that re-check.
    UPDATE dss.locks
       SET owner = p_owner, token = nextval('dss.lock_token_seq'), locked_at = now(),
           ts = now(), ttl_ms = p_ttl_ms, expires_at = exp
     WHERE id = p_id AND expires_at <= now()
    RETURNING token INTO tok;
    IF NOT FOUND THEN
        -- A free lock: ON CONFLICT waits for a concurrent inserter or
        -- deleter of the id, then inserts or gives up, without an error.
        INSERT INTO dss.locks (id, owner, token, ttl_ms, expires_at)
        VALUES (p_id, p_owner, nextval('dss.lock_token_seq'), p_ttl_ms, exp)
        ON CONFLICT (id) DO NOTHING
        RETURNING token INTO tok;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        ev := 'acquire';
        IF EXISTS (SELECT 1 FROM (SELECT h.token FROM dss.lock_history h WHERE h.id = p_id
                                   ORDER BY h.seq DESC LIMIT 1) AS last
                    WHERE last.token >= tok) THEN
            UPDATE dss.locks SET token = nextval('dss.lock_token_seq') WHERE id = p_id
            RETURNING token INTO tok;
        END IF;
    END IF;
    INSERT INTO dss.lock_history (event, id, owner, token) VALUES (ev, p_id, p_owner, tok);
    RETURN tok;
END
$fn$;

-- dss_lock_many(): all ids or none. Rows are taken in id order (INSERT ...
-- ORDER BY id ON CONFLICT), so overlapping batches wait for each other in
-- the same order and cannot deadlock. On a conflict everything done so far
-- is rolled back (sub-transaction) and the first conflicting id, by its
-- position in p_ids (1-based), is returned with its holder. No row: taken.
CREATE OR REPLACE FUNCTION dss.lock_many(p_ids text[], p_owner text, p_ttl_ms bigint)
RETURNS TABLE (conflict_ord bigint, holder text)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    c_ord bigint;
    c_id text;
    c_holder text;
    taken text[];
    fresh boolean[];
BEGIN
    BEGIN
        WITH acq AS (
            INSERT INTO dss.locks AS l (id, owner, token, ttl_ms, expires_at)
            SELECT r.id, p_owner, nextval('dss.lock_token_seq'), p_ttl_ms,
                   CASE WHEN p_ttl_ms > 0 THEN now() + p_ttl_ms * interval '1 millisecond' END
              FROM unnest(p_ids) AS r(id)
             ORDER BY r.id
            ON CONFLICT (id) DO UPDATE
               SET owner = excluded.owner, token = excluded.token, locked_at = now(),
                   ts = now(), ttl_ms = excluded.ttl_ms, expires_at = excluded.expires_at
             WHERE l.expires_at <= now()
            RETURNING l.id, (l.xmax = 0) AS inserted),
        miss AS (
            SELECT r.ord, r.id
              FROM unnest(p_ids) WITH ORDINALITY AS r(id, ord)
             WHERE r.id NOT IN (SELECT id FROM acq)
             ORDER BY r.ord LIMIT 1)
        SELECT m.ord, m.id, (SELECT array_agg(id) FROM acq), (SELECT array_agg(a.inserted) FROM acq AS a)
          INTO c_ord, c_id, taken, fresh
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
    -- Tokens drawn before a wait (see dss.lock_acquire), then the history.
    UPDATE dss.locks AS l SET token = nextval('dss.lock_token_seq')
      FROM unnest(taken) AS t(id)
     WHERE l.id = t.id
       AND EXISTS (SELECT 1 FROM (SELECT h.token FROM dss.lock_history h WHERE h.id = l.id
                                   ORDER BY h.seq DESC LIMIT 1) AS last
                    WHERE last.token >= l.token);
    INSERT INTO dss.lock_history (event, id, owner, token)
    SELECT CASE WHEN t.ins THEN 'acquire' ELSE 'takeover' END, l.id, p_owner, l.token
      FROM unnest(taken, fresh) AS t(id, ins) JOIN dss.locks AS l ON l.id = t.id;
END
$fn$;

-- Fencing inside the caller's own transaction:
--   UPDATE media SET ... WHERE id = $1 AND dss_lock_is_held($2, $3);
-- True if lock p_id is held (not expired) with token p_token. The lock row
-- is share-locked until the caller's transaction ends, so the lock cannot
-- be released or taken over before the caller's write commits.
CREATE OR REPLACE FUNCTION public.dss_lock_is_held(p_id text, p_token bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    PERFORM 1 FROM dss.locks
      WHERE id = p_id AND token = p_token
        AND (expires_at IS NULL OR expires_at > clock_timestamp())
      FOR SHARE;
    RETURN FOUND;
END
$fn$;

INSERT INTO dss.schema_info (version, description)
VALUES (2, 'leases, fencing tokens, waiting, history')
ON CONFLICT (version) DO NOTHING;

COMMIT;
