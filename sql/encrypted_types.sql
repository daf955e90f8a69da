-- Encrypted column types: round trips, binding to subject and context,
-- tampering, truncation, plaintext refusal and COPY.
--
-- Plaintexts that must never reach the server log start with CANARY; they
-- only appear in statements that succeed (PostgreSQL logs the text of a
-- failing statement itself), and test/run.sh greps the log for them.

CREATE TABLE samples (id int PRIMARY KEY, subject bigint NOT NULL, plain text NOT NULL);
INSERT INTO samples VALUES
    (1, 101, 'CANARY-alice@example.com'),
    (2, 102, ''),
    (3, 103, 'CANARY-Zoë Ødegård 日本語 🙂'),
    (4, 104, 'CANARY-' || repeat('x', 1024 * 1024));

-- Round trips of text, including empty, Unicode and a 1 MB value.
CREATE TABLE people (
    id int PRIMARY KEY,
    subject bigint NOT NULL,
    email gdprcrm.encrypted_text
);
INSERT INTO people
SELECT id, subject, gdprcrm.encrypt(subject, plain, 'crm.people.email') FROM samples;

SELECT p.id,
       gdprcrm.decrypt(p.email, 'crm.people.email') = s.plain AS round_trip,
       gdprcrm.decrypt(p.email, 'crm.people.email', p.subject) = s.plain AS round_trip_bound,
       octet_length(gdprcrm.decrypt(p.email, 'crm.people.email')) AS bytes,
       pg_column_size(p.email) - octet_length(s.plain) AS envelope_overhead
FROM people p JOIN samples s USING (id)
ORDER BY p.id;

-- The text form is the envelope: a clear prefix, never the plaintext.
SELECT id, left(email::text, 5) AS prefix,
       strpos(email::text, 'CANARY') = 0 AS no_plaintext
FROM people ORDER BY id;

-- Two encryptions of one value differ (random nonces).
SELECT gdprcrm.encrypt(101, 'same', 'c')::text <> gdprcrm.encrypt(101, 'same', 'c')::text AS fresh_nonces;

-- jsonb and bytea round trips.
SELECT gdprcrm.decrypt(gdprcrm.encrypt(105, '{"plan": "pro", "tags": ["a", "b"], "n": 1.50}'::jsonb, 'crm.people.traits'),
                       'crm.people.traits') AS traits;
SELECT gdprcrm.decrypt(gdprcrm.encrypt(105, '{}'::jsonb, 'c'), 'c') AS empty_object;
SELECT gdprcrm.decrypt(gdprcrm.encrypt(105, '"Zoë 🙂"'::jsonb, 'c'), 'c') AS unicode_string;
SELECT gdprcrm.decrypt(gdprcrm.encrypt(105, '\x00ff10'::bytea, 'c'), 'c') AS bytes;
SELECT gdprcrm.decrypt(gdprcrm.encrypt(105, ''::bytea, 'c'), 'c') AS empty_bytes;
SELECT octet_length(gdprcrm.decrypt(gdprcrm.encrypt(105, convert_to(repeat('y', 1024 * 1024), 'UTF8'), 'c'), 'c')) AS mb_bytes;
SELECT length(gdprcrm.decrypt(gdprcrm.encrypt(105, jsonb_build_object('big', repeat('z', 1024 * 1024)), 'c'), 'c')->>'big') AS mb_json;

-- NULL in, NULL out.
SELECT gdprcrm.encrypt(105, NULL::text, 'c') IS NULL AS null_value,
       gdprcrm.decrypt(NULL::gdprcrm.encrypted_text, 'c') IS NULL AS null_envelope;

-- Transplants: another context, another subject, another table or type.
SELECT gdprcrm.decrypt(email, 'crm.people.name') FROM people WHERE id = 1;
SELECT gdprcrm.decrypt(email, 'crm.people.email', 102) FROM people WHERE id = 1;
CREATE TABLE companies (id int PRIMARY KEY, contact_email gdprcrm.encrypted_text);
INSERT INTO companies SELECT 1, email FROM people WHERE id = 1;
SELECT gdprcrm.decrypt(contact_email, 'crm.companies.contact_email') FROM companies;
-- Through its text form, a value of one type is not a value of another.
SELECT (email::text)::gdprcrm.encrypted_jsonb FROM people WHERE id = 1;

-- Plaintext is refused, with a hint, without echoing it.
INSERT INTO people VALUES (9, 109, 'not an envelope');
SELECT 'gcrm:not base64!'::gdprcrm.encrypted_text;
-- An envelope is not encrypted again.
SELECT gdprcrm.encrypt(101, email::text, 'crm.people.email') FROM people WHERE id = 1;

-- Contexts are names of 1 to 255 bytes.
SELECT gdprcrm.encrypt(101, 'x', '');
SELECT gdprcrm.decrypt(email, repeat('c', 256)) FROM people WHERE id = 1;

-- Every single-bit flip of an envelope fails, for both ciphers: at input
-- when it breaks the structure, else at decryption.  Subjects around 4096
-- have no erased neighbour one bit away.
CREATE FUNCTION flip_every_bit(e gdprcrm.encrypted_text, ctx text)
RETURNS TABLE (flips int, decrypted int, refused_at_input int, failed_authentication int)
LANGUAGE plpgsql AS $$
DECLARE
    raw bytea := gdprcrm.encrypted_text_send(e);
    flipped bytea;
    t text;
BEGIN
    flips := 0; decrypted := 0; refused_at_input := 0; failed_authentication := 0;
    FOR i IN 0 .. 8 * length(raw) - 1 LOOP
        flips := flips + 1;
        flipped := set_bit(raw, i, 1 - get_bit(raw, i));
        t := 'gcrm:' || rtrim(translate(encode(flipped, 'base64'), E'+/\n', '-_'), '=');
        BEGIN
            PERFORM gdprcrm.decrypt(t::gdprcrm.encrypted_text, ctx);
            decrypted := decrypted + 1;
        EXCEPTION
            WHEN invalid_text_representation THEN refused_at_input := refused_at_input + 1;
            WHEN data_corrupted THEN failed_authentication := failed_authentication + 1;
        END;
    END LOOP;
    RETURN NEXT;
END $$;

SELECT 'xchacha20poly1305' AS cipher, * FROM flip_every_bit(gdprcrm.encrypt(4096, 'CANARY-flip', 'ctx'), 'ctx');
SET gdprcrm.cipher = aes256gcm;
SELECT 'aes256gcm' AS cipher, * FROM flip_every_bit(gdprcrm.encrypt(4096, 'CANARY-flip', 'ctx'), 'ctx');
RESET gdprcrm.cipher;

-- Truncated envelopes give a clear error: structurally at input, or as
-- failed authentication when only ciphertext is missing.
CREATE FUNCTION truncated(e gdprcrm.encrypted_text, keep int) RETURNS gdprcrm.encrypted_text
LANGUAGE sql AS $$
    SELECT ('gcrm:' || rtrim(translate(encode(substr(gdprcrm.encrypted_text_send(e), 1, keep), 'base64'),
                                       E'+/\n', '-_'), '='))::gdprcrm.encrypted_text
$$;
SELECT truncated(email, 10) FROM people WHERE id = 1;
SELECT truncated(email, 40) FROM people WHERE id = 1;
SELECT gdprcrm.decrypt(truncated(email, 60), 'crm.people.email') FROM people WHERE id = 1;
SELECT 'gcrm:'::gdprcrm.encrypted_text;

-- Values encrypted with AES-256-GCM record their cipher and decrypt
-- whatever the current setting.
SET gdprcrm.cipher = aes256gcm;
INSERT INTO people VALUES (5, 105, gdprcrm.encrypt(105, 'CANARY-aes', 'crm.people.email'));
RESET gdprcrm.cipher;
SELECT get_byte(gdprcrm.encrypted_text_send(email), 1) AS cipher_id,
       gdprcrm.decrypt(email, 'crm.people.email') = 'CANARY-aes' AS round_trip,
       octet_length(gdprcrm.encrypted_text_send(email)) - length('CANARY-aes') AS envelope_overhead
FROM people WHERE id = 5;
SET gdprcrm.cipher = 'rot13';

-- COPY in text and binary form moves envelopes as they are.
SELECT '/tmp/gdprcrm_regress_' || pg_backend_pid() AS copy_file \gset
CREATE TABLE people_copy (LIKE people);
COPY people TO :'copy_file';
COPY people_copy FROM :'copy_file';
SELECT count(*) AS text_copy_round_trips
FROM people p JOIN people_copy c USING (id)
WHERE c.email::text = p.email::text
  AND gdprcrm.decrypt(c.email, 'crm.people.email') IS NOT DISTINCT FROM gdprcrm.decrypt(p.email, 'crm.people.email');
TRUNCATE people_copy;
COPY people TO :'copy_file' (FORMAT binary);
COPY people_copy FROM :'copy_file' (FORMAT binary);
SELECT count(*) AS binary_copy_round_trips
FROM people p JOIN people_copy c USING (id)
WHERE c.email::text = p.email::text
  AND gdprcrm.decrypt(c.email, 'crm.people.email') IS NOT DISTINCT FROM gdprcrm.decrypt(p.email, 'crm.people.email');
-- Binary input checks structure too.
CREATE TABLE raw_copy (id int, subject bigint, email bytea);
INSERT INTO raw_copy VALUES (1, 101, '\x0101010000');
COPY raw_copy TO :'copy_file' (FORMAT binary);
COPY people_copy FROM :'copy_file' (FORMAT binary);

-- Application roles need explicit grants to encrypt or decrypt.
CREATE ROLE regress_app;
GRANT SELECT ON people TO regress_app;
SET ROLE regress_app;
SELECT gdprcrm.decrypt(email, 'crm.people.email') FROM people WHERE id = 1;
SELECT count(*) AS envelopes_visible FROM people;
SELECT * FROM gdprcrm.subject_keys;
RESET ROLE;
GRANT EXECUTE ON FUNCTION gdprcrm.decrypt(gdprcrm.encrypted_text, text) TO regress_app;
SET ROLE regress_app;
-- Subject 101 is no person of a project whose team includes the role.
-- (A failing statement is logged whole: it carries no test plaintext.)
SELECT gdprcrm.decrypt(email, 'crm.people.email') IS NOT NULL AS app_decrypts FROM people WHERE id = 1;
RESET ROLE;
SELECT gdprcrm.create_project('Samples', ARRAY['regress_app']::name[]) AS samples_project \gset
INSERT INTO gdprcrm.people (id, project_id) VALUES (101, :samples_project);
SET ROLE regress_app;
SELECT gdprcrm.decrypt(email, 'crm.people.email') = 'CANARY-alice@example.com' AS app_decrypts FROM people WHERE id = 1;
SELECT * FROM gdprcrm.subject_keys;
RESET ROLE;
DELETE FROM gdprcrm.people WHERE id = 101;
DELETE FROM gdprcrm.projects WHERE id = :samples_project;
SELECT setval(pg_get_serial_sequence('gdprcrm.projects', 'id'), 1, false) IS NOT NULL AS projects_restart;
REVOKE ALL ON people FROM regress_app;
REVOKE ALL ON FUNCTION gdprcrm.decrypt(gdprcrm.encrypted_text, text) FROM regress_app;
DROP ROLE regress_app;

-- Subject keys are stored wrapped: never the key, never the plaintext.
SELECT count(*) AS keys,
       bool_and(octet_length(wrapped_key) = 72) AS all_wrapped,
       bool_and(wrapped_with = (SELECT fingerprint FROM gdprcrm.key_info())) AS under_current_root
FROM gdprcrm.subject_keys WHERE subject IN (101, 102, 103, 104, 105, 4096);

DROP TABLE samples, people, people_copy, companies, raw_copy;
DROP FUNCTION flip_every_bit(gdprcrm.encrypted_text, text);
DROP FUNCTION truncated(gdprcrm.encrypted_text, int);
