/*
 * gdprcrm install script.
 *
 * The Makefile assembles it from the SQL sources in src/sql/, one per
 * concern, in the order SQL_CONCERNS lists them; a concern may use the
 * objects of the concerns before it.  Change the sources, never an
 * assembled or a released script (doc/development.md, "SQL sources and
 * releases").
 */

\echo Use "CREATE EXTENSION gdprcrm" to load this file. \quit

/*
 * The schema holds every gdprcrm object.  Application roles may look up
 * names in it; each object below grants only what it must.
 */
GRANT USAGE ON SCHEMA @extschema@ TO PUBLIC;

COMMENT ON SCHEMA @extschema@ IS
    'gdprcrm: GDPR-aware CRM data layer (per-subject encryption, consent filters, retention, subject rights)';
