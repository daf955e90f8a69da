/* gdprcrm 0.1.0: key hierarchy and the extension's random generator. */

\echo Use "CREATE EXTENSION gdprcrm" to load this file. \quit

/*
 * The schema holds every gdprcrm object.  Application roles may look up
 * names in it; each object below grants only what it must.
 */
GRANT USAGE ON SCHEMA @extschema@ TO PUBLIC;

COMMENT ON SCHEMA @extschema@ IS
    'gdprcrm: GDPR-aware CRM data layer (per-subject encryption, consent filters, retention, subject rights)';

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

CREATE FUNCTION @extschema@.random_bytes(count integer)
RETURNS bytea
AS 'MODULE_PATHNAME', 'gdprcrm_random_bytes'
LANGUAGE C STRICT VOLATILE PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.random_bytes(integer) IS
    'count (1 to 1024) cryptographically secure random bytes from the fork-safe generator used for nonces and keys';
