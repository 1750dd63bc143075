-- libdss schema version 5: the limits of dss.locks and dss.lock_history as
-- domains instead of table CHECK constraints.
--
-- Applied after 0004 (same rules: idempotent, one transaction, advisory
-- lock). Held locks, leases, tokens and history rows are kept; the rules are
-- the same (id 1 to 2048 bytes, owner at most 256 bytes, lease >= 0 ms,
-- history events from a fixed list), and a violation is still SQLSTATE
-- 23514, which the library maps to -EINVAL. Results carry the base types
-- (text, bigint); a parameter written straight into one of these columns is
-- inferred as the domain, which strictly typed clients (Rust's postgres
-- crate) refuse for a string: cast it ($1::text), as the library declares its
-- parameters.
--
-- Why: PostgreSQL rebuilds a table's CHECK constraints from their stored
-- form (parse and plan the expression) in every statement that writes the
-- table, while a domain's constraints are kept ready in the type cache. A
-- single-row INSERT on this machine: no check 43-51 us of backend CPU, one
-- to three CHECKs 59-72 us, the same limits as domains 51-53 us; a
-- lock + unlock pair writes dss.locks once and dss.lock_history twice.
--
-- Changing a column to a domain rewrites its table, under an ACCESS
-- EXCLUSIVE lock, while this transaction runs: every lock call waits for it.
-- dss.locks holds only the held locks; dss.lock_history all the rows kept by
-- its retention: prune it first (`dssctl history prune`) to shorten the
-- rewrite (about 2 s per million rows on a 2-core machine).

BEGIN;
SET LOCAL client_min_messages = warning;
DO $$ BEGIN PERFORM pg_advisory_xact_lock(7235443); END $$;

DO $$
BEGIN
    IF to_regtype('dss.lock_id') IS NULL THEN
        CREATE DOMAIN dss.lock_id AS text COLLATE "C"
            CONSTRAINT lock_id_length CHECK (octet_length(VALUE) BETWEEN 1 AND 2048);
    END IF;
    IF to_regtype('dss.lock_owner') IS NULL THEN
        CREATE DOMAIN dss.lock_owner AS text COLLATE "C"
            CONSTRAINT lock_owner_length CHECK (octet_length(VALUE) <= 256);
    END IF;
    IF to_regtype('dss.lease_ms') IS NULL THEN
        CREATE DOMAIN dss.lease_ms AS bigint
            CONSTRAINT lease_ms_range CHECK (VALUE >= 0);
    END IF;
    IF to_regtype('dss.lock_event') IS NULL THEN
        CREATE DOMAIN dss.lock_event AS text
            CONSTRAINT lock_event_known CHECK (VALUE IN
                ('acquire', 'takeover', 'release', 'force_release', 'clean'));
    END IF;

    -- The CHECKs go on every run (a re-run of 0002 adds locks_ttl_range
    -- back); the columns change only where not done yet: a second run
    -- rewrites nothing.
    ALTER TABLE dss.locks
        DROP CONSTRAINT IF EXISTS locks_id_length,
        DROP CONSTRAINT IF EXISTS locks_owner_length,
        DROP CONSTRAINT IF EXISTS locks_ttl_range;
    ALTER TABLE dss.lock_history DROP CONSTRAINT IF EXISTS lock_history_event_check;
    IF (SELECT atttypid FROM pg_attribute
         WHERE attrelid = 'dss.locks'::regclass AND attname = 'id') <> 'dss.lock_id'::regtype THEN
        ALTER TABLE dss.locks
            ALTER COLUMN id TYPE dss.lock_id,
            ALTER COLUMN owner TYPE dss.lock_owner,
            ALTER COLUMN ttl_ms TYPE dss.lease_ms;
    END IF;
    IF (SELECT atttypid FROM pg_attribute
         WHERE attrelid = 'dss.lock_history'::regclass AND attname = 'event') <> 'dss.lock_event'::regtype THEN
        ALTER TABLE dss.lock_history ALTER COLUMN event TYPE dss.lock_event;
    END IF;
END
$$;

INSERT INTO dss.schema_info (version, description)
VALUES (5, 'limits of locks and history as domains')
ON CONFLICT (version) DO NOTHING;

COMMIT;
