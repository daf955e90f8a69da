/* random: the extension's random generator. */

CREATE FUNCTION @extschema@.random_bytes(count integer)
RETURNS bytea
AS 'MODULE_PATHNAME', 'gdprcrm_random_bytes'
LANGUAGE C STRICT VOLATILE PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.random_bytes(integer) IS
    'count (1 to 1024) cryptographically secure random bytes from the fork-safe generator used for nonces and keys';
