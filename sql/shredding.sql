-- Crypto-shredding: destroying a subject's key erases every value of it.

CREATE TABLE messages (id int PRIMARY KEY, subject bigint NOT NULL, body gdprcrm.encrypted_text);
INSERT INTO messages
SELECT i, 200 + i % 3, gdprcrm.encrypt(200 + i % 3, 'CANARY-message ' || i, 'crm.messages.body')
FROM generate_series(1, 30) AS i;

SELECT gdprcrm.shred_subject_key(201) AS erased;
-- Shredding twice, or a subject that never had a key, is safe.
SELECT gdprcrm.shred_subject_key(201) AS erased_again;
SELECT gdprcrm.shred_subject_key(299) AS erased_never_seen;

-- A scan over a table where some subjects were erased does not fail.
SELECT subject,
       count(*) AS messages,
       count(gdprcrm.decrypt(body, 'crm.messages.body')) AS readable,
       bool_and(gdprcrm.is_erased(body)) AS all_erased
FROM messages GROUP BY subject ORDER BY subject;

-- Strict mode raises instead, with its own SQLSTATE.
SET gdprcrm.strict_erasure = on;
\set VERBOSITY verbose
SELECT gdprcrm.decrypt(body, 'crm.messages.body') FROM messages WHERE id = 1;
\set VERBOSITY default
RESET gdprcrm.strict_erasure;

-- An erased subject gets no new key and no new values.
SELECT gdprcrm.encrypt(201, 'again', 'crm.messages.body');
SELECT gdprcrm.encrypt(299, 'new', 'crm.messages.body');

-- The tombstone keeps no key material.
SELECT subject, key_version, wrapped_key IS NULL AS no_key, wrapped_with IS NULL AS no_root,
       destroyed_at IS NOT NULL AS tombstone
FROM gdprcrm.subject_keys WHERE subject IN (200, 201, 202, 299) ORDER BY subject;

-- Tombstones and keys are permanent, even for the table's owner.
DELETE FROM gdprcrm.subject_keys WHERE subject = 201;
UPDATE gdprcrm.subject_keys SET destroyed_at = NULL WHERE subject = 201;
UPDATE gdprcrm.subject_keys SET subject = 999 WHERE subject = 200;
TRUNCATE gdprcrm.subject_keys;
TRUNCATE gdprcrm.database_keys;

-- Shredding is transactional: a rolled-back shred leaves the key.
BEGIN;
SELECT gdprcrm.shred_subject_key(202);
SELECT count(gdprcrm.decrypt(body, 'crm.messages.body')) AS readable_inside FROM messages WHERE subject = 202;
ROLLBACK;
SELECT count(gdprcrm.decrypt(body, 'crm.messages.body')) AS readable_after_rollback FROM messages WHERE subject = 202;

-- A key created in a rolled-back transaction is not used afterwards.
BEGIN;
SELECT gdprcrm.encrypt(250, 'CANARY-rolled-back', 'c') IS NOT NULL AS created;
ROLLBACK;
SELECT count(*) AS rows_for_250 FROM gdprcrm.subject_keys WHERE subject = 250;
SELECT gdprcrm.decrypt(gdprcrm.encrypt(250, 'CANARY-after', 'c'), 'c') = 'CANARY-after' AS new_key_works;
SELECT count(*) AS rows_for_250 FROM gdprcrm.subject_keys WHERE subject = 250;
-- The same inside a savepoint.
BEGIN;
SAVEPOINT s;
SELECT gdprcrm.encrypt(251, 'CANARY-sp', 'c') IS NOT NULL AS created;
ROLLBACK TO SAVEPOINT s;
SELECT gdprcrm.decrypt(gdprcrm.encrypt(251, 'CANARY-sp2', 'c'), 'c') = 'CANARY-sp2' AS works_after_savepoint;
COMMIT;

-- A transaction that destroyed keys cannot be prepared: other backends
-- would not learn of it at COMMIT PREPARED.
BEGIN;
SELECT gdprcrm.shred_subject_key(202);
PREPARE TRANSACTION 'shred';

-- The same inside a savepoint.
BEGIN;
SAVEPOINT s;
SELECT gdprcrm.shred_subject_key(202);
ROLLBACK TO SAVEPOINT s;
SELECT count(gdprcrm.decrypt(body, 'crm.messages.body')) AS readable_after_savepoint FROM messages WHERE subject = 202;
COMMIT;

-- The key cache is bounded: with room for 10 keys, 2000 subjects decrypt
-- correctly, and the cache's memory does not grow from the first 100
-- subjects to all 2000.
CREATE TABLE many (subject bigint PRIMARY KEY, v gdprcrm.encrypted_text);
INSERT INTO many SELECT s, gdprcrm.encrypt(s, 'CANARY-' || s, 'c') FROM generate_series(1000, 2999) AS s;
\c
SET gdprcrm.key_cache_size = 10;
SELECT count(*) FILTER (WHERE gdprcrm.decrypt(v, 'c') = 'CANARY-' || subject) AS correct
FROM many WHERE subject < 1100;
SELECT total_bytes AS cache_bytes FROM pg_backend_memory_contexts
WHERE name = 'gdprcrm subject key cache' \gset
SELECT count(*) FILTER (WHERE gdprcrm.decrypt(v, 'c') = 'CANARY-' || subject) AS correct FROM many;
SELECT count(*) FILTER (WHERE gdprcrm.decrypt(v, 'c') = 'CANARY-' || subject) AS correct_again FROM many;
SELECT total_bytes = :cache_bytes AS cache_did_not_grow FROM pg_backend_memory_contexts
WHERE name = 'gdprcrm subject key cache';
RESET gdprcrm.key_cache_size;
SET gdprcrm.key_cache_size = 0;

DROP TABLE messages, many;
