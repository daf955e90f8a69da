/* blind_index: keyed hashes for equality lookups of encrypted values. */

/* blind_index may create this database's key on first use: no parallel plans. */
CREATE FUNCTION @extschema@.blind_index(value text, domain text)
    RETURNS bytea AS 'MODULE_PATHNAME', 'gdprcrm_blind_index' LANGUAGE C STABLE STRICT PARALLEL UNSAFE;

CREATE FUNCTION @extschema@.normalize_email(address text)
    RETURNS text AS 'MODULE_PATHNAME', 'gdprcrm_normalize_email' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

REVOKE ALL ON FUNCTION @extschema@.blind_index(text, text) FROM PUBLIC;

COMMENT ON FUNCTION @extschema@.blind_index(text, text) IS
    'Keyed 16-byte hash of a value for equality lookups within a domain such as ''email''';
COMMENT ON FUNCTION @extschema@.normalize_email(text) IS
    'Trimmed, lower-cased email address, the form blind indexes of emails are computed on';

GRANT EXECUTE ON FUNCTION @extschema@.blind_index(text, text) TO gdprcrm_app, gdprcrm_admin;
