-- libdss schema version 6: wake-ups flagged on the lock row.
--
-- Applied after 0005 (same rules: idempotent, one transaction, advisory
-- lock). Held locks, leases, waiters, tokens and history rows are kept; no
-- table is rewritten (a column with a constant default is added in place).
--
-- Wake-ups: a release used to look for queued waiters of its id in
-- dss.lock_waiters (an index probe in every dss_unlock, about a tenth of a
-- lock + unlock pair's throughput at 8 clients). Now a waiter that fails to
-- take an id sets `waited` on the holder's row, a waiter that takes it from
-- the queue sets it on its own row, and a release notifies only if the row
-- it deletes carries the flag (src/sql/lock.rs, WAIT_TRY and UNLOCK). No
-- statement clears the flag: it goes with the row.

BEGIN;
SET LOCAL client_min_messages = warning;
DO $$ BEGIN PERFORM pg_advisory_xact_lock(7235443); END $$;

ALTER TABLE dss.locks ADD COLUMN IF NOT EXISTS waited boolean NOT NULL DEFAULT false;
-- Waiters queued by a library of schema 5 while this runs: their locks notify.
UPDATE dss.locks l SET waited = true
 WHERE NOT l.waited AND EXISTS (SELECT 1 FROM dss.lock_waiters w WHERE w.id = l.id);

INSERT INTO dss.schema_info (version, description)
VALUES (6, 'wake-ups flagged on the lock row')
ON CONFLICT (version) DO NOTHING;

COMMIT;
