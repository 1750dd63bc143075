-- libdss schema version 6: shared (reader) locks, downgrade, counting
-- semaphores; wake-ups flagged on the lock row.
--
-- Applied after 0005 (same rules: idempotent, one transaction, advisory
-- lock). Held locks, leases, waiters, tokens and history rows are kept; no
-- table is rewritten (columns with a constant default are added in place).
--
-- Shared locks live on the lock ids of dss.locks. While an id is held
-- shared, its dss.locks row has a NULL owner (no exclusive holder can match
-- it) and stands for all its shared holders, which are rows of
-- dss.lock_shares whose `gen` is that row's token: the exclusive path
-- (dss_lock, dss_lock_wait, dss_lock_many) sees the id as held, with no
-- change to its statements. The row's expires_at is the end of the last
-- shared lease (NULL while a shared holder has none), so an id whose every
-- shared lease ended is free for the exclusive path too, which takes the
-- row over with a new token: the shares of the old `gen` are then dead
-- (cleared by the next shared call on the id). Every shared call locks the
-- row (FOR UPDATE) before it reads or writes the shares, so the row's
-- expiry always matches its shares, and takes the id's bucket lock first
-- when it draws a token (see "Tokens" in 0004).
--
-- Semaphores have ids of their own: dss.sems (one row per semaphore in
-- use: its capacity, locked by every call on it) and dss.sem_holders (one
-- row per holder: its permits, token and mandatory lease).
--
-- Waiters of all three kinds queue in dss.lock_waiters (its new `mode`:
-- 1 exclusive, 2 shared, 3 semaphore, as DSS_MODE_*), first come, first
-- served: an exclusive request waits for every earlier waiter of the id, a
-- shared one for earlier exclusive ones only, a semaphore request for every
-- earlier request on the semaphore.
--
-- Wake-ups: a release used to look for queued waiters of its id in
-- dss.lock_waiters (an index probe in every dss_unlock, about a tenth of a
-- lock + unlock pair's throughput at 8 clients). Now a waiter that fails to
-- take an id sets `waited` on the holder's row, a waiter that takes it from
-- the queue sets it on its own row, and a release notifies only if the row
-- it deletes carries the flag (src/sql/lock.rs, WAIT_TRY and UNLOCK). No
-- statement clears the flag: it goes with the row. The shared and
-- semaphore calls below, off the hot path, look at the queue itself.

BEGIN;
SET LOCAL client_min_messages = warning;
DO $$ BEGIN PERFORM pg_advisory_xact_lock(7235443); END $$;

ALTER TABLE dss.locks ADD COLUMN IF NOT EXISTS waited boolean NOT NULL DEFAULT false;
-- Waiters queued by a library of schema 5 while this runs: their locks notify.
UPDATE dss.locks l SET waited = true
 WHERE NOT l.waited AND EXISTS (SELECT 1 FROM dss.lock_waiters w WHERE w.id = l.id);

-- NULL owner: the id is held shared (see the top of this file).
ALTER TABLE dss.locks ALTER COLUMN owner DROP NOT NULL;

-- The shared holders of an id whose dss.locks row has a NULL owner and the
-- token `gen`; rows of another `gen` are dead (that row was taken over).
CREATE TABLE IF NOT EXISTS dss.lock_shares (
    id         dss.lock_id NOT NULL,
    owner      dss.lock_owner NOT NULL,
    gen        bigint NOT NULL,
    token      bigint NOT NULL,
    locked_at  timestamptz NOT NULL DEFAULT now(),
    ts         timestamptz NOT NULL DEFAULT now(),
    ttl_ms     dss.lease_ms NOT NULL DEFAULT 0,
    expires_at timestamptz,
    PRIMARY KEY (id, owner)
) WITH (fillfactor = 90);

-- Semaphores in use (a row exists while the semaphore has holders or is
-- being acquired) and their holders. A permit always has a lease.
CREATE TABLE IF NOT EXISTS dss.sems (
    id       dss.lock_id PRIMARY KEY,
    capacity integer NOT NULL CHECK (capacity > 0)
);
CREATE TABLE IF NOT EXISTS dss.sem_holders (
    id         dss.lock_id NOT NULL,
    owner      dss.lock_owner NOT NULL,
    permits    integer NOT NULL CHECK (permits > 0),
    token      bigint NOT NULL,
    locked_at  timestamptz NOT NULL DEFAULT now(),
    ts         timestamptz NOT NULL DEFAULT now(),
    ttl_ms     dss.lease_ms NOT NULL CHECK (ttl_ms > 0),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (id, owner)
) WITH (fillfactor = 90);

ALTER TABLE dss.lock_waiters
    ADD COLUMN IF NOT EXISTS mode smallint NOT NULL DEFAULT 1,
    ADD COLUMN IF NOT EXISTS permits integer NOT NULL DEFAULT 1;

ALTER DOMAIN dss.lock_event DROP CONSTRAINT IF EXISTS lock_event_known;
ALTER DOMAIN dss.lock_event ADD CONSTRAINT lock_event_known CHECK (VALUE IN
    ('acquire', 'takeover', 'release', 'force_release', 'clean',
     'shared_acquire', 'shared_takeover', 'shared_release', 'shared_force_release', 'downgrade',
     'sem_acquire', 'sem_release', 'sem_force_release', 'expire')) NOT VALID;

-- The wake-up channel of a semaphore (a lock's is 'dss_' || md5(id)).
CREATE OR REPLACE FUNCTION dss.sem_channel(p_id text)
RETURNS text
LANGUAGE sql IMMUTABLE AS $fn$ SELECT 'dss_' || md5('sem:' || p_id) $fn$;

-- Wakes the waiters of lock id p_id (p_sem: of semaphore p_id) if any is
-- queued.
CREATE OR REPLACE FUNCTION dss.wake(p_id text, p_sem boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    IF EXISTS (SELECT 1 FROM dss.lock_waiters w
                WHERE w.id = p_id AND (w.mode = 3) = p_sem) THEN
        PERFORM pg_notify(CASE WHEN p_sem THEN dss.sem_channel(p_id) ELSE 'dss_' || md5(p_id) END, '');
    END IF;
END
$fn$;

-- Purges the dead waiters of p_id (session gone or deadline passed), but
-- not p_ticket, as WAIT_TRY does.
CREATE OR REPLACE FUNCTION dss.purge_waiters(p_id text, p_ticket bigint)
RETURNS void
LANGUAGE sql VOLATILE AS $fn$
    DELETE FROM dss.lock_waiters w
     WHERE w.id = p_id AND w.ticket <> p_ticket
       AND (w.until < now() OR NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(w.backend_pid)));
$fn$;

-- With the row of shared id p_id (token p_gen) locked: drops the dead and
-- expired shares, then deletes the row if no share is left (waking the
-- waiters), else sets its expiry to the end of the last lease (waking the
-- waiters if that came nearer).
CREATE OR REPLACE FUNCTION dss.lock_shared_settle(p_id text, p_gen bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    n bigint;
    unbounded boolean;
    last_end timestamptz;
    old_end timestamptz;
BEGIN
    WITH gone AS (
        DELETE FROM dss.lock_shares s
         WHERE s.id = p_id AND (s.gen <> p_gen OR s.expires_at <= now())
        RETURNING s.owner, s.token, s.gen = p_gen AS ours)
    INSERT INTO dss.lock_history (event, id, owner, token)
    SELECT 'expire', p_id, owner, token FROM gone WHERE ours;
    SELECT count(*), bool_or(s.expires_at IS NULL), max(s.expires_at)
      INTO n, unbounded, last_end
      FROM dss.lock_shares s WHERE s.id = p_id;
    IF n = 0 THEN
        DELETE FROM dss.locks l WHERE l.id = p_id AND l.owner IS NULL AND l.token = p_gen;
        PERFORM dss.wake(p_id, false);
        RETURN;
    END IF;
    SELECT l.expires_at INTO old_end FROM dss.locks l WHERE l.id = p_id AND l.token = p_gen;
    IF unbounded THEN
        last_end := NULL;
    END IF;
    IF old_end IS DISTINCT FROM last_end THEN
        UPDATE dss.locks l SET expires_at = last_end WHERE l.id = p_id AND l.token = p_gen;
        IF last_end IS NOT NULL AND (old_end IS NULL OR last_end < old_end) THEN
            PERFORM dss.wake(p_id, false);
        END IF;
    END IF;
END
$fn$;

-- dss_lock_shared, one attempt: p_ticket 0 if not queued yet; p_queue_ms
-- how long to stay queued if blocked (0: do not queue). Returns the shape
-- of WAIT_TRY (src/sql/lock.rs) and a status: NULL, or 'already' (p_owner
-- holds the id, shared or exclusive) or 'cancelled' (p_ticket's queue entry
-- was removed: see WAIT_TRY). Blocked by a live exclusive holder
-- (whose row gets `waited`, under its row lock: its release will notify)
-- or by an earlier exclusive waiter (whose grant marks its row).
CREATE OR REPLACE FUNCTION dss.lock_shared_try(p_id text, p_owner text, p_ttl_ms bigint,
    p_ticket bigint, p_queue_ms bigint,
    OUT o_token bigint, OUT o_ticket bigint, OUT o_channel text, OUT o_left_ms bigint,
    OUT o_armed boolean, OUT o_status text)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    exp timestamptz := CASE WHEN p_ttl_ms > 0 THEN now() + p_ttl_ms * interval '1 millisecond' END;
    r record;
    g bigint;
    fresh boolean := false;
    ev text := 'shared_acquire';
BEGIN
    o_channel := 'dss_' || md5(p_id);
    o_armed := true;
    IF p_ticket <> 0 AND NOT EXISTS (SELECT 1 FROM dss.lock_waiters w WHERE w.ticket = p_ticket) THEN
        o_status := 'cancelled';
        RETURN;
    END IF;
    PERFORM dss.purge_waiters(p_id, p_ticket);
    IF EXISTS (SELECT 1 FROM dss.lock_waiters w
                WHERE w.id = p_id AND w.mode = 1 AND (p_ticket = 0 OR w.ticket < p_ticket)) THEN
        IF EXISTS (SELECT 1 FROM dss.locks l
                    WHERE l.id = p_id AND l.owner = p_owner
                      AND (l.expires_at IS NULL OR l.expires_at > now()))
           OR EXISTS (SELECT 1 FROM dss.lock_shares s
                        JOIN dss.locks l ON l.id = s.id AND l.owner IS NULL AND l.token = s.gen
                       WHERE s.id = p_id AND s.owner = p_owner
                         AND (s.expires_at IS NULL OR s.expires_at > now())) THEN
            o_status := 'already';
            RETURN;
        END IF;
    ELSE
        PERFORM pg_advisory_xact_lock(7235443, hashtext(p_id) & 4095);
        LOOP
            SELECT l.owner, l.token, coalesce(l.expires_at <= now(), false) AS expired
              INTO r FROM dss.locks l WHERE l.id = p_id FOR UPDATE;
            EXIT WHEN FOUND;
            INSERT INTO dss.locks AS l (id, owner, token, ttl_ms, waited, expires_at)
            VALUES (p_id, NULL, nextval('dss.lock_token_seq'), 0, p_ticket <> 0, exp)
            ON CONFLICT (id) DO NOTHING
            RETURNING l.token INTO g;
            fresh := g IS NOT NULL;
            EXIT WHEN fresh;
        END LOOP;
        IF NOT fresh AND r.owner IS NOT NULL AND NOT r.expired THEN
            IF r.owner = p_owner THEN
                o_status := 'already';
                RETURN;
            END IF;
            -- Only for a request that waits: a refused try changes nothing.
            IF p_ticket <> 0 OR p_queue_ms > 0 THEN
                UPDATE dss.locks l SET waited = true WHERE l.id = p_id AND NOT l.waited;
            END IF;
        ELSE
            IF NOT fresh AND (r.owner IS NOT NULL OR r.expired) THEN
                -- An ended lease (exclusive, or every share): taken over.
                UPDATE dss.locks l
                   SET owner = NULL, token = nextval('dss.lock_token_seq'), locked_at = now(),
                       ts = now(), ttl_ms = 0, expires_at = exp, waited = l.waited OR p_ticket <> 0
                 WHERE l.id = p_id
                RETURNING l.token INTO g;
                fresh := true;
                ev := 'shared_takeover';
            END IF;
            IF fresh THEN
                DELETE FROM dss.lock_shares s WHERE s.id = p_id;
            ELSE
                g := r.token;
                DELETE FROM dss.lock_shares s
                 WHERE s.id = p_id AND s.owner = p_owner AND (s.gen <> g OR s.expires_at <= now());
            END IF;
            INSERT INTO dss.lock_shares AS s (id, owner, gen, token, ttl_ms, expires_at)
            VALUES (p_id, p_owner, g, nextval('dss.lock_token_seq'), p_ttl_ms, exp)
            ON CONFLICT (id, owner) DO NOTHING
            RETURNING s.token INTO o_token;
            IF o_token IS NULL THEN
                o_status := 'already';
                RETURN;
            END IF;
            IF NOT fresh THEN
                UPDATE dss.locks l
                   SET ts = now(),
                       expires_at = CASE WHEN l.expires_at IS NULL OR exp IS NULL THEN NULL
                                         ELSE greatest(l.expires_at, exp) END,
                       waited = l.waited OR p_ticket <> 0
                 WHERE l.id = p_id;
            END IF;
            INSERT INTO dss.lock_history (event, id, owner, token) VALUES (ev, p_id, p_owner, o_token);
            IF p_ticket <> 0 THEN
                DELETE FROM dss.lock_waiters w WHERE w.ticket = p_ticket;
            END IF;
            RETURN;
        END IF;
    END IF;
    -- Blocked.
    IF p_ticket = 0 AND p_queue_ms > 0 THEN
        INSERT INTO dss.lock_waiters AS w (id, owner, until, mode)
        VALUES (p_id, p_owner, now() + p_queue_ms * interval '1 millisecond', 2)
        RETURNING w.ticket INTO o_ticket;
    END IF;
    SELECT CASE WHEN l.expires_at IS NULL THEN NULL
                ELSE greatest(0, floor(extract(epoch FROM l.expires_at - now()) * 1000))::int8 END
      INTO o_left_ms FROM dss.locks l WHERE l.id = p_id;
END
$fn$;

-- dss_lock_shared_refresh: extends p_owner's share of p_id by its ttl, or
-- sets its lease to p_ttl_ms from now (dssd's PATCH; 0: none). 'done',
-- 'nolock' (p_owner holds no share of p_id) or 'expired' (its lease ended).
DROP FUNCTION IF EXISTS dss.lock_shared_refresh(text, text);
CREATE OR REPLACE FUNCTION dss.lock_shared_refresh(p_id text, p_owner text, p_ttl_ms bigint)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    g bigint;
BEGIN
    SELECT l.token INTO g FROM dss.locks l WHERE l.id = p_id AND l.owner IS NULL FOR UPDATE;
    IF FOUND THEN
        UPDATE dss.lock_shares s
           SET ts = now(), ttl_ms = coalesce(p_ttl_ms, s.ttl_ms),
               expires_at = CASE WHEN coalesce(p_ttl_ms, s.ttl_ms) > 0
                                 THEN now() + coalesce(p_ttl_ms, s.ttl_ms) * interval '1 millisecond' END
         WHERE s.id = p_id AND s.owner = p_owner AND s.gen = g
           AND (s.expires_at IS NULL OR s.expires_at > now());
    END IF;
    IF NOT FOUND THEN
        RETURN CASE WHEN EXISTS (SELECT 1 FROM dss.lock_shares s WHERE s.id = p_id AND s.owner = p_owner)
                    THEN 'expired' ELSE 'nolock' END;
    END IF;
    UPDATE dss.locks l SET ts = now() WHERE l.id = p_id AND l.token = g;
    PERFORM dss.lock_shared_settle(p_id, g);
    RETURN 'done';
END
$fn$;

-- dss_unlock_shared: p_owner's share of p_id, or with a NULL p_owner every
-- share (recorded with p_actor). 'done', 'nolock', or 'expired' (p_owner's
-- lease had ended: its row is removed all the same).
CREATE OR REPLACE FUNCTION dss.lock_shared_release(p_id text, p_owner text, p_actor text)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    g bigint;
    tok bigint;
    dead boolean;
    n bigint;
BEGIN
    SELECT l.token INTO g FROM dss.locks l WHERE l.id = p_id AND l.owner IS NULL FOR UPDATE;
    IF NOT FOUND THEN
        -- No shared hold: what is left of p_owner's ended with its lease.
        DELETE FROM dss.lock_shares s
         WHERE s.id = p_id AND (p_owner IS NULL OR s.owner = p_owner)
           AND NOT EXISTS (SELECT 1 FROM dss.locks l WHERE l.id = p_id AND l.owner IS NULL AND l.token = s.gen);
        RETURN CASE WHEN FOUND AND p_owner IS NOT NULL THEN 'expired' ELSE 'nolock' END;
    END IF;
    IF p_owner IS NULL THEN
        WITH gone AS (
            DELETE FROM dss.lock_shares s WHERE s.id = p_id
            RETURNING s.owner, s.token, s.gen = g AND (s.expires_at IS NULL OR s.expires_at > now()) AS live)
        INSERT INTO dss.lock_history (event, id, owner, token, actor)
        SELECT 'shared_force_release', p_id, owner, token, p_actor FROM gone WHERE live;
        GET DIAGNOSTICS n = ROW_COUNT;
        PERFORM dss.lock_shared_settle(p_id, g);
        RETURN CASE WHEN n > 0 THEN 'done' ELSE 'nolock' END;
    END IF;
    DELETE FROM dss.lock_shares s WHERE s.id = p_id AND s.owner = p_owner
    RETURNING s.token, s.gen <> g OR s.expires_at <= now() INTO tok, dead;
    IF NOT FOUND THEN
        RETURN 'nolock';
    END IF;
    INSERT INTO dss.lock_history (event, id, owner, token) VALUES ('shared_release', p_id, p_owner, tok);
    PERFORM dss.lock_shared_settle(p_id, g);
    RETURN CASE WHEN dead THEN 'expired' ELSE 'done' END;
END
$fn$;

-- dss_lock_downgrade: p_owner's live exclusive hold of p_id becomes a
-- shared one, with the same lease and a new token, in one transaction: no
-- exclusive caller can get in between, and queued readers are woken.
-- Returns (token, NULL) or (NULL, 'nolock' | 'notowner').
CREATE OR REPLACE FUNCTION dss.lock_downgrade(p_id text, p_owner text,
    OUT o_token bigint, OUT o_status text)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    r record;
    g bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7235443, hashtext(p_id) & 4095);
    SELECT l.owner, l.ttl_ms, l.expires_at, (l.expires_at IS NULL OR l.expires_at > now()) AS live
      INTO r FROM dss.locks l WHERE l.id = p_id FOR UPDATE;
    IF NOT FOUND OR r.owner IS NULL OR NOT r.live THEN
        o_status := 'nolock';
        RETURN;
    ELSIF r.owner <> p_owner THEN
        o_status := 'notowner';
        RETURN;
    END IF;
    UPDATE dss.locks l SET owner = NULL, token = nextval('dss.lock_token_seq'), ts = now(), ttl_ms = 0
     WHERE l.id = p_id RETURNING l.token INTO g;
    DELETE FROM dss.lock_shares s WHERE s.id = p_id;
    INSERT INTO dss.lock_shares AS s (id, owner, gen, token, ttl_ms, expires_at)
    VALUES (p_id, p_owner, g, nextval('dss.lock_token_seq'), r.ttl_ms, r.expires_at)
    RETURNING s.token INTO o_token;
    INSERT INTO dss.lock_history (event, id, owner, token) VALUES ('downgrade', p_id, p_owner, o_token);
    PERFORM dss.wake(p_id, false);
END
$fn$;

-- dss_sem_acquire, one attempt: p_permits of semaphore p_id (capacity
-- p_capacity) for p_owner, with a lease of p_ttl_ms; p_ticket and
-- p_queue_ms as for lock_shared_try, whose shape it returns, with the
-- statuses 'already' (p_owner holds permits of it) and 'capacity' (it has
-- holders and another capacity), 'cancelled'. Granted only if the permits fit and no
-- earlier request waits (first come, first served: a large request is not
-- overtaken by small ones). Holds whose lease ended are removed first.
CREATE OR REPLACE FUNCTION dss.sem_try(p_id text, p_owner text, p_permits integer,
    p_capacity integer, p_ttl_ms bigint, p_ticket bigint, p_queue_ms bigint,
    OUT o_token bigint, OUT o_ticket bigint, OUT o_channel text, OUT o_left_ms bigint,
    OUT o_armed boolean, OUT o_status text)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    cap integer;
    used bigint;
    mine boolean;
BEGIN
    o_channel := dss.sem_channel(p_id);
    o_armed := true;
    IF p_ticket <> 0 AND NOT EXISTS (SELECT 1 FROM dss.lock_waiters w WHERE w.ticket = p_ticket) THEN
        o_status := 'cancelled';
        RETURN;
    END IF;
    PERFORM dss.purge_waiters(p_id, p_ticket);
    -- Tokens of one semaphore follow its grants (a bucket of its own kind).
    PERFORM pg_advisory_xact_lock(7235444, hashtext(p_id) & 4095);
    LOOP
        SELECT s.capacity INTO cap FROM dss.sems s WHERE s.id = p_id FOR UPDATE;
        EXIT WHEN FOUND;
        INSERT INTO dss.sems (id, capacity) VALUES (p_id, p_capacity) ON CONFLICT (id) DO NOTHING;
    END LOOP;
    WITH gone AS (
        DELETE FROM dss.sem_holders h WHERE h.id = p_id AND h.expires_at <= now()
        RETURNING h.owner, h.token)
    INSERT INTO dss.lock_history (event, id, owner, token) SELECT 'expire', p_id, owner, token FROM gone;
    SELECT coalesce(sum(h.permits), 0), coalesce(bool_or(h.owner = p_owner), false)
      INTO used, mine FROM dss.sem_holders h WHERE h.id = p_id;
    IF mine THEN
        o_status := 'already';
        RETURN;
    END IF;
    IF cap <> p_capacity THEN
        IF used > 0 THEN
            o_status := 'capacity';
            RETURN;
        END IF;
        UPDATE dss.sems s SET capacity = p_capacity WHERE s.id = p_id;
        cap := p_capacity;
    END IF;
    IF used + p_permits <= cap
       AND NOT EXISTS (SELECT 1 FROM dss.lock_waiters w
                        WHERE w.id = p_id AND w.mode = 3 AND (p_ticket = 0 OR w.ticket < p_ticket)) THEN
        INSERT INTO dss.sem_holders AS h (id, owner, permits, token, ttl_ms, expires_at)
        VALUES (p_id, p_owner, p_permits, nextval('dss.lock_token_seq'), p_ttl_ms,
                now() + p_ttl_ms * interval '1 millisecond')
        RETURNING h.token INTO o_token;
        INSERT INTO dss.lock_history (event, id, owner, token) VALUES ('sem_acquire', p_id, p_owner, o_token);
        IF p_ticket <> 0 THEN
            DELETE FROM dss.lock_waiters w WHERE w.ticket = p_ticket;
            -- The next in line may fit as well.
            PERFORM dss.wake(p_id, true);
        END IF;
        RETURN;
    END IF;
    IF p_ticket = 0 AND p_queue_ms > 0 THEN
        INSERT INTO dss.lock_waiters AS w (id, owner, until, mode, permits)
        VALUES (p_id, p_owner, now() + p_queue_ms * interval '1 millisecond', 3, p_permits)
        RETURNING w.ticket INTO o_ticket;
    END IF;
    SELECT greatest(0, floor(extract(epoch FROM min(h.expires_at) - now()) * 1000))::int8
      INTO o_left_ms FROM dss.sem_holders h WHERE h.id = p_id;
END
$fn$;

-- dss_sem_release: p_owner's permits of p_id, or with a NULL p_owner every
-- holder's (recorded with p_actor). 'done', 'nolock', or 'expired'
-- (p_owner's lease had ended: its row is removed all the same).
CREATE OR REPLACE FUNCTION dss.sem_release(p_id text, p_owner text, p_actor text)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    tok bigint;
    dead boolean := false;
    n bigint := 0;
BEGIN
    PERFORM 1 FROM dss.sems s WHERE s.id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'nolock';
    END IF;
    IF p_owner IS NULL THEN
        WITH gone AS (
            DELETE FROM dss.sem_holders h WHERE h.id = p_id
            RETURNING h.owner, h.token, h.expires_at > now() AS live),
        rec AS (
            INSERT INTO dss.lock_history (event, id, owner, token, actor)
            SELECT CASE WHEN live THEN 'sem_force_release' ELSE 'expire' END, p_id, owner, token,
                   CASE WHEN live THEN p_actor END
              FROM gone)
        SELECT count(*) FILTER (WHERE live) INTO n FROM gone;
    ELSE
        DELETE FROM dss.sem_holders h WHERE h.id = p_id AND h.owner = p_owner
        RETURNING h.token, h.expires_at <= now() INTO tok, dead;
        IF FOUND THEN
            INSERT INTO dss.lock_history (event, id, owner, token)
            VALUES ('sem_release', p_id, p_owner, tok);
            n := 1;
        END IF;
    END IF;
    IF n > 0 THEN
        PERFORM dss.wake(p_id, true);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM dss.sem_holders h WHERE h.id = p_id) THEN
        DELETE FROM dss.sems s WHERE s.id = p_id;
    END IF;
    RETURN CASE WHEN dead THEN 'expired' WHEN n > 0 THEN 'done' ELSE 'nolock' END;
END
$fn$;

-- dss_lock_clean for shared holds and permits: releases those of every
-- owner starting with p_prefix (recorded as 'clean' with p_actor); how many.
CREATE OR REPLACE FUNCTION dss.clean_shared(p_prefix text, p_actor text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    r record;
    n bigint := 0;
    k bigint;
BEGIN
    FOR r IN SELECT l.id, l.token FROM dss.locks l
              WHERE l.owner IS NULL
                AND l.id IN (SELECT s.id FROM dss.lock_shares s WHERE starts_with(s.owner, p_prefix))
              ORDER BY l.id FOR UPDATE OF l
    LOOP
        WITH gone AS (
            DELETE FROM dss.lock_shares s WHERE s.id = r.id AND starts_with(s.owner, p_prefix)
            RETURNING s.owner, s.token, s.gen = r.token AND (s.expires_at IS NULL OR s.expires_at > now()) AS live),
        rec AS (
            INSERT INTO dss.lock_history (event, id, owner, token, actor)
            SELECT 'clean', r.id, owner, token, p_actor FROM gone WHERE live)
        SELECT count(*) FILTER (WHERE live) INTO k FROM gone;
        n := n + k;
        PERFORM dss.lock_shared_settle(r.id, r.token);
    END LOOP;
    FOR r IN SELECT s.id FROM dss.sems s
              WHERE s.id IN (SELECT h.id FROM dss.sem_holders h WHERE starts_with(h.owner, p_prefix))
              ORDER BY s.id FOR UPDATE
    LOOP
        WITH gone AS (
            DELETE FROM dss.sem_holders h WHERE h.id = r.id AND starts_with(h.owner, p_prefix)
            RETURNING h.owner, h.token, h.expires_at > now() AS live),
        rec AS (
            INSERT INTO dss.lock_history (event, id, owner, token, actor)
            SELECT 'sem_force_release', r.id, owner, token, p_actor FROM gone WHERE live)
        SELECT count(*) FILTER (WHERE live) INTO k FROM gone;
        n := n + k;
        PERFORM dss.wake(r.id, true);
        DELETE FROM dss.sems s WHERE s.id = r.id
           AND NOT EXISTS (SELECT 1 FROM dss.sem_holders h WHERE h.id = r.id);
    END LOOP;
    RETURN n;
END
$fn$;

-- Fencing inside the caller's own transaction:
--   UPDATE media SET ... WHERE id = $1 AND dss_lock_is_held($2, $3);
-- True if lock p_id is held (not expired) with token p_token, exclusive or
-- shared. The rows of that hold are share-locked until the caller's
-- transaction ends, so it cannot be released or taken over before the
-- caller's write commits (for a shared hold, the other shared calls on
-- p_id wait for that commit too).
CREATE OR REPLACE FUNCTION public.dss_lock_is_held(p_id text, p_token bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    PERFORM 1 FROM dss.locks
      WHERE id = p_id AND token = p_token AND owner IS NOT NULL
        AND (expires_at IS NULL OR expires_at > clock_timestamp())
      FOR SHARE;
    IF FOUND THEN
        RETURN true;
    END IF;
    PERFORM 1 FROM dss.lock_shares s JOIN dss.locks l ON l.id = s.id AND l.owner IS NULL AND l.token = s.gen
      WHERE s.id = p_id AND s.token = p_token
        AND (s.expires_at IS NULL OR s.expires_at > clock_timestamp())
      FOR SHARE OF s, l;
    RETURN FOUND;
END
$fn$;

INSERT INTO dss.schema_info (version, description)
VALUES (6, 'shared locks, semaphores, wake-ups flagged on the lock row')
ON CONFLICT (version) DO NOTHING;

COMMIT;
