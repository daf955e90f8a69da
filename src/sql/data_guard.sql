/*
 * data_guard: refuses restricted data (payment card numbers,
 * special-category keys) in JSON documents; the CHECK constraints of the
 * CRM tables call it.
 */

CREATE FUNCTION @extschema@.check_unrestricted(value jsonb, what text)
    RETURNS boolean AS 'MODULE_PATHNAME', 'gdprcrm_check_unrestricted'
    LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.check_unrestricted(jsonb, text) IS
    'True, or an error naming the JSON path, when a document holds a payment card number or a special-category key';
