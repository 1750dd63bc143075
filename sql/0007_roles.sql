-- libdss schema version 7: the role dss_client, holding exactly what the
-- library and dssctl's read commands need.
--
-- Applied after 0006 (same rules: idempotent, one transaction, advisory
-- lock). Nothing in the tables changes.
--
-- An operator grants the role to the daemons' login roles:
--     GRANT dss_client TO phobos;
-- A member of dss_client can take, refresh and release locks, shared locks
-- and semaphore permits, wait for them, read and write the key-value store,
-- and read everything (dssctl list, status, history, sem, kv, migrate
-- --dry-run, history prune --dry-run). It cannot run DDL (no CREATE on the
-- schema, owns nothing), rewrite the audit trail (dss.lock_history is
-- INSERT and SELECT only: no UPDATE, DELETE or TRUNCATE), change
-- dss.schema_info or dss.settings (SELECT only). Pruning the history
-- (`dssctl history prune`), changing a setting and the migrations need the
-- schema owner.
--
-- The role is cluster-wide: one dss_client serves every database of the
-- cluster holding a dss schema (each database's migrations grant it that
-- database's objects). Creating it needs CREATEROLE; a migrating role
-- without it can apply this file once an administrator has run
--     CREATE ROLE dss_client NOLOGIN;
-- A later migration that adds a table or function grants it here too.

BEGIN;
SET LOCAL client_min_messages = warning;
DO $$ BEGIN PERFORM pg_advisory_xact_lock(7235443); END $$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dss_client') THEN
        BEGIN
            CREATE ROLE dss_client NOLOGIN;
        EXCEPTION
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role dss_client does not exist and % may not create it', current_user
                    USING ERRCODE = '42501',
                          HINT = 'as a superuser or a role with CREATEROLE: CREATE ROLE dss_client NOLOGIN; then apply this file again';
            WHEN unique_violation OR duplicate_object THEN
                NULL;   -- created meanwhile by a migration of another database
        END;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA dss TO dss_client;

-- Read only.
GRANT SELECT ON dss.schema_info, dss.settings TO dss_client;
-- Append only: the audit trail.
GRANT SELECT, INSERT ON dss.lock_history TO dss_client;
-- The state the calls change.
GRANT SELECT, INSERT, UPDATE, DELETE
   ON dss.locks, dss.lock_waiters, dss.lock_shares, dss.sems, dss.sem_holders, dss.kv
   TO dss_client;
-- nextval() only (the identity columns' sequences need no grant).
GRANT USAGE ON SEQUENCE dss.lock_token_seq, dss.kv_version_seq TO dss_client;
-- What the current role lacks of dss_client's privileges on the schema's
-- tables and sequences (empty: nothing), e.g. {"INSERT on dss.lock_history"},
-- read from the grants above themselves (pg_class.relacl), so there is one
-- list. dss_init() calls it and refuses with -EPERM, naming what is
-- missing, rather than fail call by call later. A role granted these
-- privileges directly, not through dss_client, passes.
CREATE OR REPLACE FUNCTION dss.missing_privileges()
RETURNS text[]
LANGUAGE sql STABLE AS $fn$
    SELECT coalesce(array_agg(a.privilege_type || ' on ' || c.oid::regclass::text
                              ORDER BY c.relname, a.privilege_type), '{}')
      FROM pg_class c, aclexplode(c.relacl) a
     WHERE c.relnamespace = 'dss'::regnamespace
       AND a.grantee = 'dss_client'::regrole
       AND NOT CASE WHEN c.relkind = 'S'
                    THEN has_sequence_privilege(c.oid, a.privilege_type)
                    ELSE has_table_privilege(c.oid, a.privilege_type) END
$fn$;

-- Every function of the schema runs with its caller's rights (none is
-- SECURITY DEFINER): executing one gives nothing the grants above do not.
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA dss TO dss_client;
GRANT EXECUTE ON FUNCTION public.dss_lock_is_held(text, bigint) TO dss_client;

INSERT INTO dss.schema_info (version, description)
VALUES (7, 'role dss_client: what the library needs, history append-only')
ON CONFLICT (version) DO NOTHING;

COMMIT;
