/*
 * keys: the root key's fingerprint, where unwrapped keys live, the tables
 * of wrapped subject and database keys with the tombstones of erased
 * subjects, shredding and rewrapping.
 */

CREATE FUNCTION @extschema@.key_info(
    OUT fingerprint text,
    OUT source text,
    OUT loaded_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'gdprcrm_key_info'
LANGUAGE C STRICT VOLATILE PARALLEL SAFE;

REVOKE ALL ON FUNCTION @extschema@.key_info() FROM PUBLIC;

COMMENT ON FUNCTION @extschema@.key_info() IS
    'Keyed fingerprint, source (command or development_file) and load time of the root key; never the key';

/*
 * Where this backend keeps unwrapped keys, as the kernel sees it: for a
 * DBA checking that locking works under the server's RLIMIT_MEMLOCK.
 */
CREATE FUNCTION @extschema@.key_memory()
RETURNS TABLE (area text, bytes bigint, locked boolean, excluded_from_dumps boolean)
AS 'MODULE_PATHNAME', 'gdprcrm_key_memory'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED ROWS 4;
REVOKE ALL ON FUNCTION @extschema@.key_memory() FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.key_memory() IS
    'Memory of this backend that holds unwrapped keys, per area: bytes, and whether the kernel keeps it locked and out of core dumps; never an address or a key';

/*
 * Key tables.  No role but their owner has any privilege on them; the C
 * code reads and writes them as that owner.  pg_dump keeps their rows so
 * that a restore with the same root key decrypts everything.
 */
CREATE TABLE @extschema@.subject_keys (
    subject bigint PRIMARY KEY,
    key_version integer NOT NULL DEFAULT 1 CHECK (key_version > 0),
    wrapped_key bytea,
    wrapped_with text,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    destroyed_at timestamptz,
    CONSTRAINT subject_keys_live_or_tombstone CHECK (
        (wrapped_key IS NOT NULL AND wrapped_with IS NOT NULL AND destroyed_at IS NULL)
        OR (wrapped_key IS NULL AND wrapped_with IS NULL AND destroyed_at IS NOT NULL))
);
REVOKE ALL ON @extschema@.subject_keys FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.subject_keys', '');
COMMENT ON TABLE @extschema@.subject_keys IS
    'One data key per subject, wrapped under the root key; a row without a key is the tombstone of an erased subject';

CREATE TABLE @extschema@.database_keys (
    purpose text PRIMARY KEY,
    wrapped_key bytea NOT NULL,
    wrapped_with text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
REVOKE ALL ON @extschema@.database_keys FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.database_keys', '');
COMMENT ON TABLE @extschema@.database_keys IS
    'Random keys of this database for blind indexes, wrapped under the root key so that they survive its rotation';

/*
 * Keys and tombstones are permanent.  Backends cache both, so a deleted or
 * resurrected row would let one backend encrypt under a key that no longer
 * exists (data lost) or read a subject that was erased.  Only the two
 * changes gdprcrm itself makes are allowed: a live key destroyed, and a
 * live key rewrapped under a new root key.
 */
CREATE FUNCTION @extschema@.protect_key_rows() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Nested IFs: PL/pgSQL does not short-circuit field references.
    IF TG_OP = 'UPDATE' THEN
        IF TG_TABLE_NAME = 'subject_keys' THEN
            IF OLD.destroyed_at IS NULL AND NEW.subject = OLD.subject
               AND NEW.key_version = OLD.key_version AND NEW.created_at = OLD.created_at THEN
                RETURN NEW;
            END IF;
        ELSIF NEW.purpose = OLD.purpose AND NEW.created_at = OLD.created_at THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'rows of %.% cannot be deleted or changed this way', TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Keys are destroyed with gdprcrm.shred_subject_key() and rewrapped with gdprcrm.rewrap_keys(); tombstones are permanent.';
END $$;
REVOKE ALL ON FUNCTION @extschema@.protect_key_rows() FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.protect_key_rows() IS
    'Trigger keeping key rows and tombstones permanent';

CREATE TRIGGER protect_key_rows BEFORE UPDATE OR DELETE ON @extschema@.subject_keys
    FOR EACH ROW EXECUTE FUNCTION @extschema@.protect_key_rows();
CREATE TRIGGER protect_key_rows_truncate BEFORE TRUNCATE ON @extschema@.subject_keys
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.protect_key_rows();
CREATE TRIGGER protect_key_rows BEFORE UPDATE OR DELETE ON @extschema@.database_keys
    FOR EACH ROW EXECUTE FUNCTION @extschema@.protect_key_rows();
CREATE TRIGGER protect_key_rows_truncate BEFORE TRUNCATE ON @extschema@.database_keys
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.protect_key_rows();

CREATE FUNCTION @extschema@.shred_subject_key(subject bigint)
    RETURNS boolean AS 'MODULE_PATHNAME', 'gdprcrm_shred_subject_key' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION @extschema@.shred_subject_key(bigint) FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.shred_subject_key(bigint) IS
    'Destroy a subject''s data key (crypto-shredding), keeping a tombstone; true if this call erased the subject';

/*
 * New people's data keys, made in one statement and cached, so that the
 * first encrypt() of each finds its key without a query of its own
 * (src/subject_keys.c): import_people() makes a batch's keys at once, at
 * about half the cost of making them one by one.
 */
CREATE FUNCTION @extschema@.create_subject_keys(subjects bigint[]) RETURNS integer
    AS 'MODULE_PATHNAME', 'gdprcrm_create_subject_keys' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.create_subject_keys(bigint[]) IS
    'Create and cache the first data keys of new subjects (for import_people); returns how many were created';
REVOKE ALL ON FUNCTION @extschema@.create_subject_keys(bigint[]) FROM PUBLIC;

CREATE FUNCTION @extschema@.rewrap_keys(batch_size integer DEFAULT 10000)
    RETURNS bigint AS 'MODULE_PATHNAME', 'gdprcrm_rewrap_keys' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION @extschema@.rewrap_keys(integer) FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.rewrap_keys(integer) IS
    'During a root key rotation, rewrap up to batch_size keys under the current root key; returns how many';
