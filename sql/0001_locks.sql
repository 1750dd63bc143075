-- libdss schema version 1: the phobos DSS lock table.
--
-- Apply every sql/[0-9]*.sql in name order with
--     psql -v ON_ERROR_STOP=1 -f FILE
-- Each file is idempotent (applying it again changes nothing) and runs in one
-- transaction under an advisory lock, so concurrent runs do not race.
-- The library never runs DDL itself; it only checks dss.schema_info.

BEGIN;
SET LOCAL client_min_messages = warning;   -- no "already exists, skipping" notices on re-runs
DO $$ BEGIN PERFORM pg_advisory_xact_lock(7235443); END $$;   -- 'dss' migrations, one at a time

CREATE SCHEMA IF NOT EXISTS dss;

CREATE TABLE IF NOT EXISTS dss.schema_info (
    version     integer PRIMARY KEY,
    description text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per held lock. Ids and owners are opaque byte strings (any UTF-8);
-- COLLATE "C" compares them byte by byte, which is what a lock id needs and
-- is faster than a linguistic collation. The length limits (in bytes) are the
-- library's own; a CHECK violation maps to -EINVAL.
CREATE TABLE IF NOT EXISTS dss.locks (
    id    text COLLATE "C" NOT NULL,
    owner text COLLATE "C" NOT NULL,
    ts    timestamptz NOT NULL DEFAULT now(),   -- taken or last refreshed (database clock)
    CONSTRAINT locks_pkey PRIMARY KEY (id),
    CONSTRAINT locks_id_length CHECK (octet_length(id) BETWEEN 1 AND 2048),
    CONSTRAINT locks_owner_length CHECK (octet_length(owner) <= 256)
) WITH (fillfactor = 90);   -- room for HOT updates on refresh

INSERT INTO dss.schema_info (version, description)
VALUES (1, 'phobos DSS lock table')
ON CONFLICT (version) DO NOTHING;

COMMIT;
