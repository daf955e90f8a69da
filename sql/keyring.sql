-- The root key: what SQL may know of it, and what it may not.

-- The test key command prints a fixed key, so the fingerprint is fixed.
-- A change here means every existing installation would see a new one.
SELECT fingerprint, source,
       loaded_at <= now() AND loaded_at > now() - interval '1 day' AS loaded_recently
FROM gdprcrm.key_info();

-- No window of eight hex digits of the key appears in the fingerprint.
SELECT count(*) AS key_fragments_in_fingerprint
FROM gdprcrm.key_info(),
     generate_series(1, 57) AS i
WHERE strpos(fingerprint,
             substr('6764707263726d2d726567726573732d746573742d6b65792d30303030303031', i, 8)) > 0;

-- The setting is fixed at server start and names a command, not a key.
SET gdprcrm.key_command = 'echo 00';
-- Unknown gdprcrm.* names are refused rather than kept as placeholders.
SET gdprcrm.no_such_setting = 'on';

-- What an application role can reach.
CREATE ROLE regress_app;
SET ROLE regress_app;
SELECT * FROM gdprcrm.key_info();
SHOW gdprcrm.key_command;
SELECT count(*) AS visible_key_settings FROM pg_settings WHERE name = 'gdprcrm.key_command';
SELECT length(gdprcrm.random_bytes(16)) AS app_may_draw_random_bytes;
RESET ROLE;

-- Which functions application roles may execute: none that touches a key.
SELECT p.oid::regprocedure AS function,
       has_function_privilege('regress_app', p.oid, 'EXECUTE') AS app_may_execute
FROM pg_proc p
WHERE p.pronamespace = 'gdprcrm'::regnamespace
ORDER BY 1;

DROP ROLE regress_app;
