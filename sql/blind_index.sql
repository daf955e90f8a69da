-- Blind indexes and email normalisation.

SELECT gdprcrm.normalize_email('  Alice.Smith+News@Example.COM ') AS normalized;
SELECT gdprcrm.normalize_email('bob@example.org.') AS trailing_dot;
SELECT gdprcrm.normalize_email('Zoë@Exämple.com') AS non_ascii_kept;
SELECT gdprcrm.normalize_email('no-at-sign');
SELECT gdprcrm.normalize_email('two@@example.com');
SELECT gdprcrm.normalize_email('@example.com');
SELECT gdprcrm.normalize_email('alice@');
SELECT gdprcrm.normalize_email('ali ce@example.com');

-- Equal inputs, equal hashes; other domains or values, other hashes.
SELECT octet_length(gdprcrm.blind_index('alice@example.com', 'email')) AS bytes,
       gdprcrm.blind_index('alice@example.com', 'email') = gdprcrm.blind_index('alice@example.com', 'email') AS stable,
       gdprcrm.blind_index('alice@example.com', 'email') <> gdprcrm.blind_index('alice@example.com', 'phone') AS per_domain,
       gdprcrm.blind_index('alice@example.com', 'email') <> gdprcrm.blind_index('alice@example.co', 'email') AS per_value;
SELECT gdprcrm.blind_index('x', '');

-- Looking a person up by email uses an index on the blind index.
CREATE TABLE people (
    id bigint PRIMARY KEY,
    email gdprcrm.encrypted_text NOT NULL,
    email_bidx bytea NOT NULL
);
CREATE INDEX people_email_bidx ON people (email_bidx);
INSERT INTO people
SELECT i, gdprcrm.encrypt(10000 + i, e, 'crm.people.email'), gdprcrm.blind_index(gdprcrm.normalize_email(e), 'email')
FROM (SELECT i, 'CANARY-user' || i || '@Example.com' AS e FROM generate_series(1, 5000) AS i) AS s;
ANALYZE people;

EXPLAIN (COSTS OFF)
SELECT id FROM people
WHERE email_bidx = gdprcrm.blind_index(gdprcrm.normalize_email(' canary-USER4242@example.com'), 'email');
SELECT id, gdprcrm.decrypt(email, 'crm.people.email', 10000 + id) AS email FROM people
WHERE email_bidx = gdprcrm.blind_index(gdprcrm.normalize_email(' canary-USER4242@example.com'), 'email');

-- The blind index key is random per database, stored wrapped.
SELECT purpose, octet_length(wrapped_key) AS wrapped_bytes,
       wrapped_with = (SELECT fingerprint FROM gdprcrm.key_info()) AS under_current_root
FROM gdprcrm.database_keys;

DROP TABLE people;
