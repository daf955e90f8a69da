/* gdprcrm 0.1.0 -> 0.2.0: encrypted column types, subject keys, blind indexes. */

\echo Use "ALTER EXTENSION gdprcrm UPDATE TO '0.2.0'" to load this file. \quit

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

/*
 * The encrypted types.  Input and output move the envelope, never
 * plaintext, so they need no key and are open to everyone.
 */
CREATE TYPE @extschema@.encrypted_text;
CREATE TYPE @extschema@.encrypted_jsonb;
CREATE TYPE @extschema@.encrypted_bytea;

CREATE FUNCTION @extschema@.encrypted_text_in(cstring) RETURNS @extschema@.encrypted_text
    AS 'MODULE_PATHNAME', 'gdprcrm_encrypted_text_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.encrypted_text_out(@extschema@.encrypted_text) RETURNS cstring
    AS 'MODULE_PATHNAME', 'gdprcrm_encrypted_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.encrypted_text_recv(internal) RETURNS @extschema@.encrypted_text
    AS 'MODULE_PATHNAME', 'gdprcrm_encrypted_text_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.encrypted_text_send(@extschema@.encrypted_text) RETURNS bytea
    AS 'MODULE_PATHNAME', 'gdprcrm_encrypted_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION @extschema@.encrypted_jsonb_in(cstring) RETURNS @extschema@.encrypted_jsonb
    AS 'MODULE_PATHNAME', 'gdprcrm_encrypted_jsonb_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.encrypted_jsonb_out(@extschema@.encrypted_jsonb) RETURNS cstring
    AS 'MODULE_PATHNAME', 'gdprcrm_encrypted_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.encrypted_jsonb_recv(internal) RETURNS @extschema@.encrypted_jsonb
    AS 'MODULE_PATHNAME', 'gdprcrm_encrypted_jsonb_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.encrypted_jsonb_send(@extschema@.encrypted_jsonb) RETURNS bytea
    AS 'MODULE_PATHNAME', 'gdprcrm_encrypted_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION @extschema@.encrypted_bytea_in(cstring) RETURNS @extschema@.encrypted_bytea
    AS 'MODULE_PATHNAME', 'gdprcrm_encrypted_bytea_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.encrypted_bytea_out(@extschema@.encrypted_bytea) RETURNS cstring
    AS 'MODULE_PATHNAME', 'gdprcrm_encrypted_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.encrypted_bytea_recv(internal) RETURNS @extschema@.encrypted_bytea
    AS 'MODULE_PATHNAME', 'gdprcrm_encrypted_bytea_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.encrypted_bytea_send(@extschema@.encrypted_bytea) RETURNS bytea
    AS 'MODULE_PATHNAME', 'gdprcrm_encrypted_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

/* Ciphertext does not compress: keep it out of line without trying. */
CREATE TYPE @extschema@.encrypted_text (
    INPUT = @extschema@.encrypted_text_in, OUTPUT = @extschema@.encrypted_text_out,
    RECEIVE = @extschema@.encrypted_text_recv, SEND = @extschema@.encrypted_text_send,
    INTERNALLENGTH = VARIABLE, STORAGE = external, ALIGNMENT = int4);
CREATE TYPE @extschema@.encrypted_jsonb (
    INPUT = @extschema@.encrypted_jsonb_in, OUTPUT = @extschema@.encrypted_jsonb_out,
    RECEIVE = @extschema@.encrypted_jsonb_recv, SEND = @extschema@.encrypted_jsonb_send,
    INTERNALLENGTH = VARIABLE, STORAGE = external, ALIGNMENT = int4);
CREATE TYPE @extschema@.encrypted_bytea (
    INPUT = @extschema@.encrypted_bytea_in, OUTPUT = @extschema@.encrypted_bytea_out,
    RECEIVE = @extschema@.encrypted_bytea_recv, SEND = @extschema@.encrypted_bytea_send,
    INTERNALLENGTH = VARIABLE, STORAGE = external, ALIGNMENT = int4);

COMMENT ON TYPE @extschema@.encrypted_text IS
    'Text encrypted under its subject''s data key; the text form is the ciphertext envelope';
COMMENT ON TYPE @extschema@.encrypted_jsonb IS
    'jsonb encrypted under its subject''s data key; the text form is the ciphertext envelope';
COMMENT ON TYPE @extschema@.encrypted_bytea IS
    'bytea encrypted under its subject''s data key; the text form is the ciphertext envelope';

COMMENT ON FUNCTION @extschema@.encrypted_text_in(cstring) IS 'Input of encrypted_text: validates an envelope, refuses plaintext';
COMMENT ON FUNCTION @extschema@.encrypted_text_out(@extschema@.encrypted_text) IS 'Output of encrypted_text: the envelope';
COMMENT ON FUNCTION @extschema@.encrypted_text_recv(internal) IS 'Binary input of encrypted_text: validates an envelope';
COMMENT ON FUNCTION @extschema@.encrypted_text_send(@extschema@.encrypted_text) IS 'Binary output of encrypted_text: the envelope bytes';
COMMENT ON FUNCTION @extschema@.encrypted_jsonb_in(cstring) IS 'Input of encrypted_jsonb: validates an envelope, refuses plaintext';
COMMENT ON FUNCTION @extschema@.encrypted_jsonb_out(@extschema@.encrypted_jsonb) IS 'Output of encrypted_jsonb: the envelope';
COMMENT ON FUNCTION @extschema@.encrypted_jsonb_recv(internal) IS 'Binary input of encrypted_jsonb: validates an envelope';
COMMENT ON FUNCTION @extschema@.encrypted_jsonb_send(@extschema@.encrypted_jsonb) IS 'Binary output of encrypted_jsonb: the envelope bytes';
COMMENT ON FUNCTION @extschema@.encrypted_bytea_in(cstring) IS 'Input of encrypted_bytea: validates an envelope, refuses plaintext';
COMMENT ON FUNCTION @extschema@.encrypted_bytea_out(@extschema@.encrypted_bytea) IS 'Output of encrypted_bytea: the envelope';
COMMENT ON FUNCTION @extschema@.encrypted_bytea_recv(internal) IS 'Binary input of encrypted_bytea: validates an envelope';
COMMENT ON FUNCTION @extschema@.encrypted_bytea_send(@extschema@.encrypted_bytea) IS 'Binary output of encrypted_bytea: the envelope bytes';

/*
 * Encrypting and decrypting use subject keys: not executable by PUBLIC.
 * Grant EXECUTE to application roles (doc/reference.md lists the grants).
 * encrypt may create a subject's key, so it is parallel unsafe; decrypt
 * may read the key table, which only the leader may query.
 */
CREATE FUNCTION @extschema@.encrypt(subject bigint, value text, context text)
    RETURNS @extschema@.encrypted_text
    AS 'MODULE_PATHNAME', 'gdprcrm_encrypt_text' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
CREATE FUNCTION @extschema@.encrypt(subject bigint, value jsonb, context text)
    RETURNS @extschema@.encrypted_jsonb
    AS 'MODULE_PATHNAME', 'gdprcrm_encrypt_jsonb' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
CREATE FUNCTION @extschema@.encrypt(subject bigint, value bytea, context text)
    RETURNS @extschema@.encrypted_bytea
    AS 'MODULE_PATHNAME', 'gdprcrm_encrypt_bytea' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

CREATE FUNCTION @extschema@.decrypt(value @extschema@.encrypted_text, context text)
    RETURNS text AS 'MODULE_PATHNAME', 'gdprcrm_decrypt_text' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION @extschema@.decrypt(value @extschema@.encrypted_text, context text, subject bigint)
    RETURNS text AS 'MODULE_PATHNAME', 'gdprcrm_decrypt_text' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION @extschema@.decrypt(value @extschema@.encrypted_jsonb, context text)
    RETURNS jsonb AS 'MODULE_PATHNAME', 'gdprcrm_decrypt_jsonb' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION @extschema@.decrypt(value @extschema@.encrypted_jsonb, context text, subject bigint)
    RETURNS jsonb AS 'MODULE_PATHNAME', 'gdprcrm_decrypt_jsonb' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION @extschema@.decrypt(value @extschema@.encrypted_bytea, context text)
    RETURNS bytea AS 'MODULE_PATHNAME', 'gdprcrm_decrypt_bytea' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION @extschema@.decrypt(value @extschema@.encrypted_bytea, context text, subject bigint)
    RETURNS bytea AS 'MODULE_PATHNAME', 'gdprcrm_decrypt_bytea' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;

CREATE FUNCTION @extschema@.is_erased(value @extschema@.encrypted_text)
    RETURNS boolean AS 'MODULE_PATHNAME', 'gdprcrm_is_erased' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION @extschema@.is_erased(value @extschema@.encrypted_jsonb)
    RETURNS boolean AS 'MODULE_PATHNAME', 'gdprcrm_is_erased' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION @extschema@.is_erased(value @extschema@.encrypted_bytea)
    RETURNS boolean AS 'MODULE_PATHNAME', 'gdprcrm_is_erased' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;

CREATE FUNCTION @extschema@.shred_subject_key(subject bigint)
    RETURNS boolean AS 'MODULE_PATHNAME', 'gdprcrm_shred_subject_key' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

CREATE FUNCTION @extschema@.rewrap_keys(batch_size integer DEFAULT 10000)
    RETURNS bigint AS 'MODULE_PATHNAME', 'gdprcrm_rewrap_keys' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

CREATE FUNCTION @extschema@.blind_index(value text, domain text)
    RETURNS bytea AS 'MODULE_PATHNAME', 'gdprcrm_blind_index' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;

CREATE FUNCTION @extschema@.normalize_email(address text)
    RETURNS text AS 'MODULE_PATHNAME', 'gdprcrm_normalize_email' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

REVOKE ALL ON FUNCTION @extschema@.encrypt(bigint, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.encrypt(bigint, jsonb, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.encrypt(bigint, bytea, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.decrypt(@extschema@.encrypted_text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.decrypt(@extschema@.encrypted_text, text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.decrypt(@extschema@.encrypted_jsonb, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.decrypt(@extschema@.encrypted_jsonb, text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.decrypt(@extschema@.encrypted_bytea, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.decrypt(@extschema@.encrypted_bytea, text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.is_erased(@extschema@.encrypted_text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.is_erased(@extschema@.encrypted_jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.is_erased(@extschema@.encrypted_bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.shred_subject_key(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.rewrap_keys(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.blind_index(text, text) FROM PUBLIC;

COMMENT ON FUNCTION @extschema@.encrypt(bigint, text, text) IS
    'Encrypt text for a subject, bound to the subject and a context such as ''crm.people.email''';
COMMENT ON FUNCTION @extschema@.encrypt(bigint, jsonb, text) IS
    'Encrypt jsonb for a subject, bound to the subject and a context';
COMMENT ON FUNCTION @extschema@.encrypt(bigint, bytea, text) IS
    'Encrypt bytea for a subject, bound to the subject and a context';
COMMENT ON FUNCTION @extschema@.decrypt(@extschema@.encrypted_text, text) IS
    'Decrypt under the context it was encrypted with; NULL if its subject was erased';
COMMENT ON FUNCTION @extschema@.decrypt(@extschema@.encrypted_text, text, bigint) IS
    'Decrypt a value that must belong to the given subject; NULL if that subject was erased';
COMMENT ON FUNCTION @extschema@.decrypt(@extschema@.encrypted_jsonb, text) IS
    'Decrypt under the context it was encrypted with; NULL if its subject was erased';
COMMENT ON FUNCTION @extschema@.decrypt(@extschema@.encrypted_jsonb, text, bigint) IS
    'Decrypt a value that must belong to the given subject; NULL if that subject was erased';
COMMENT ON FUNCTION @extschema@.decrypt(@extschema@.encrypted_bytea, text) IS
    'Decrypt under the context it was encrypted with; NULL if its subject was erased';
COMMENT ON FUNCTION @extschema@.decrypt(@extschema@.encrypted_bytea, text, bigint) IS
    'Decrypt a value that must belong to the given subject; NULL if that subject was erased';
COMMENT ON FUNCTION @extschema@.is_erased(@extschema@.encrypted_text) IS
    'Whether the value''s subject was erased (its data key destroyed)';
COMMENT ON FUNCTION @extschema@.is_erased(@extschema@.encrypted_jsonb) IS
    'Whether the value''s subject was erased (its data key destroyed)';
COMMENT ON FUNCTION @extschema@.is_erased(@extschema@.encrypted_bytea) IS
    'Whether the value''s subject was erased (its data key destroyed)';
COMMENT ON FUNCTION @extschema@.shred_subject_key(bigint) IS
    'Destroy a subject''s data key (crypto-shredding), keeping a tombstone; true if this call erased the subject';
COMMENT ON FUNCTION @extschema@.rewrap_keys(integer) IS
    'During a root key rotation, rewrap up to batch_size keys under the current root key; returns how many';
COMMENT ON FUNCTION @extschema@.blind_index(text, text) IS
    'Keyed 16-byte hash of a value for equality lookups within a domain such as ''email''';
COMMENT ON FUNCTION @extschema@.normalize_email(text) IS
    'Trimmed, lower-cased email address, the form blind indexes of emails are computed on';
