/*
 * types: the encrypted column types and the functions that encrypt and
 * decrypt under subject keys.
 */

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

-- Applications encrypt and decrypt the data of their projects' people.
GRANT EXECUTE ON FUNCTION
    @extschema@.encrypt(bigint, text, text),
    @extschema@.encrypt(bigint, jsonb, text),
    @extschema@.encrypt(bigint, bytea, text),
    @extschema@.decrypt(@extschema@.encrypted_text, text),
    @extschema@.decrypt(@extschema@.encrypted_text, text, bigint),
    @extschema@.decrypt(@extschema@.encrypted_jsonb, text),
    @extschema@.decrypt(@extschema@.encrypted_jsonb, text, bigint),
    @extschema@.decrypt(@extschema@.encrypted_bytea, text),
    @extschema@.decrypt(@extschema@.encrypted_bytea, text, bigint),
    @extschema@.is_erased(@extschema@.encrypted_text),
    @extschema@.is_erased(@extschema@.encrypted_jsonb),
    @extschema@.is_erased(@extschema@.encrypted_bytea)
    TO gdprcrm_app, gdprcrm_admin;
