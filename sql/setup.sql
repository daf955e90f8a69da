-- Installing: the extension creates its schema and nothing outside it.
CREATE EXTENSION gdprcrm;

SELECT extversion, extrelocatable, extnamespace::regnamespace AS schema
FROM pg_extension WHERE extname = 'gdprcrm';

-- Every member object, so that a new one shows up in review.
SELECT pg_describe_object(classid, objid, objsubid) AS member
FROM pg_depend
WHERE refclassid = 'pg_extension'::regclass
  AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'gdprcrm')
  AND deptype = 'e'
ORDER BY 1;

-- Every function carries a comment.
SELECT p.oid::regprocedure AS undocumented
FROM pg_proc p
WHERE p.pronamespace = 'gdprcrm'::regnamespace
  AND obj_description(p.oid, 'pg_proc') IS NULL;

-- The extension is not trusted: only a superuser may install it, and only
-- in its own schema.
DROP EXTENSION gdprcrm;
CREATE ROLE regress_installer;
GRANT CREATE ON DATABASE contrib_regression TO regress_installer;
SET ROLE regress_installer;
CREATE EXTENSION gdprcrm;
RESET ROLE;
CREATE EXTENSION gdprcrm SCHEMA public;
CREATE EXTENSION gdprcrm;
REVOKE CREATE ON DATABASE contrib_regression FROM regress_installer;
DROP ROLE regress_installer;

-- Upgrades from released versions are compared with a fresh install by
-- test/t/012_extension_upgrade.pl.
