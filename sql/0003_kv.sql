-- libdss schema version 3: the key-value store (dss_kv_* calls).
--
-- Applied after 0002 (same rules: idempotent, one transaction, advisory lock).

BEGIN;
SET LOCAL client_min_messages = warning;
DO $$ BEGIN PERFORM pg_advisory_xact_lock(7235443); END $$;

-- Versions: every write takes the next value (and never less than the
-- key's previous version + 1), so a version is never reused for a key, even
-- across a delete and a re-create: compare-and-swap cannot be fooled (ABA).
CREATE SEQUENCE IF NOT EXISTS dss.kv_version_seq AS bigint;

-- Keys and buckets are opaque UTF-8 strings compared byte by byte
-- (COLLATE "C"), so keyset pagination on (bucket, key) follows byte order.
-- A row whose expires_at has passed reads as absent everywhere; such rows
-- are overwritten by the next write of the key, and can be purged with
--     DELETE FROM dss.kv WHERE expires_at < now();
-- (uses kv_expiry; run it from cron or a daemon's timer).
CREATE TABLE IF NOT EXISTS dss.kv (
    bucket     text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    value      bytea NOT NULL,
    version    bigint NOT NULL,
    expires_at timestamptz,                       -- NULL: never
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT kv_pkey PRIMARY KEY (bucket, key),
    CONSTRAINT kv_bucket_length CHECK (octet_length(bucket) BETWEEN 1 AND 1024),
    CONSTRAINT kv_key_length CHECK (octet_length(key) BETWEEN 1 AND 1024),
    CONSTRAINT kv_value_size CHECK (octet_length(value) <= 67108864)
) WITH (fillfactor = 90);
ALTER SEQUENCE dss.kv_version_seq OWNED BY dss.kv.version;
CREATE INDEX IF NOT EXISTS kv_expiry ON dss.kv (expires_at) WHERE expires_at IS NOT NULL;

-- The integer in a counter value (dss_kv_increment): only an optional '-'
-- and decimal digits; anything else fails with SQLSTATE 22P02 (-EINVAL).
CREATE OR REPLACE FUNCTION dss.kv_integer(p_value bytea)
RETURNS bigint
LANGUAGE sql STABLE STRICT AS $fn$
    SELECT (CASE WHEN convert_from(p_value, 'UTF8') ~ '^-?[0-9]{1,19}$'
                 THEN convert_from(p_value, 'UTF8')
                 ELSE 'not a decimal integer' END)::bigint
$fn$;

-- dss_kv_delete_many(): one primary-key lookup per key, in key order, so
-- that concurrent batches lock rows in the same order. Returns how many
-- rows were removed.
CREATE OR REPLACE FUNCTION dss.kv_delete_many(p_bucket text, p_keys text[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    k text;
    n bigint := 0;
BEGIN
    FOR k IN SELECT DISTINCT u.key FROM unnest(p_keys) AS u(key) ORDER BY u.key LOOP
        DELETE FROM dss.kv WHERE bucket = p_bucket AND key = k;
        IF FOUND THEN
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END
$fn$;

INSERT INTO dss.schema_info (version, description)
VALUES (3, 'key-value store')
ON CONFLICT (version) DO NOTHING;

COMMIT;
