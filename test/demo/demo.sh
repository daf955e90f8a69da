#!/usr/bin/env bash
# gdprcrm demo, from a fresh Debian 12 machine: installs what it needs,
# builds and installs the extension, starts a private PostgreSQL instance
# with gdprcrm preloaded and a development key, and walks through what
# gdprcrm does, printing each step.  Nothing outside a temporary directory
# is touched besides the installed extension; the instance is stopped and
# removed at the end (DEMO_KEEP=1 keeps it).
set -euo pipefail
cd "$(dirname "$0")/../.."
. test/lib.sh

demo=$(mktemp -d /tmp/gdprcrm-demo.XXXXXX)
data=$demo/data
port=5499

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
say()  { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
note() { printf '   %s\n' "$*"; }
sql()  { as_run_user "$bindir/psql" -X -q -h "$demo" -p "$port" -d "${DB:-demo}" \
             -v ON_ERROR_STOP=1 --echo-queries -P pager=off "$@"; }
pg_ctl() { as_run_user "$bindir/pg_ctl" -D "$data" -l "$demo/server.log" -w "$@" >/dev/null; }

cleanup() {
    [ -n "${bindir:-}" ] && pg_ctl stop -m fast 2>/dev/null || true
    if [ "${DEMO_KEEP:-0}" = 1 ]; then
        echo "instance kept in $demo (start: $bindir/pg_ctl -D $data start)"
    else
        rm -rf "$demo"
    fi
}
trap cleanup EXIT

say "1. Installing dependencies, building with -Wall -Wextra -Werror, installing"
bash test/deps.sh
build_and_install
bindir=$("$PG_CONFIG" --bindir)
note "installed gdprcrm $(sed -n "s/^default_version = '\(.*\)'/\1/p" gdprcrm.control) into $("$PG_CONFIG" --pkglibdir)"

say "2. A private PostgreSQL instance with gdprcrm preloaded"
[ "$(id -u)" -eq 0 ] && chown "$run_user" "$demo"
as_run_user "$bindir/initdb" -D "$data" -A trust -U postgres >/dev/null
cat >> "$data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$demo'
port = $port
shared_preload_libraries = 'gdprcrm'
# gdprcrm.key_command is left empty: the development key file is used.
CONF
pg_ctl start
note "data directory: $data (socket in $demo, no TCP listener)"
note "the server log at start:"
grep -E 'gdprcrm' "$demo/server.log" | sed 's/^/     /'

say "3. The development root key: created once, private to the server"
ls -l "$data/gdprcrm_dev_root.key" | awk '{print "   " $1, $3, $NF}'
note "(its content is never printed, logged or returned by SQL)"

say "4. Installing the extension"
DB=postgres sql -c "CREATE DATABASE demo" >/dev/null
sql -c "CREATE EXTENSION gdprcrm" -c "\\dx gdprcrm"

say "5. What SQL may know of the root key: a keyed fingerprint, its source, its load time"
sql -c "SELECT * FROM gdprcrm.key_info()"
fingerprint=$(as_run_user "$bindir/psql" -X -Atq -h "$demo" -p "$port" -d demo -c "SELECT fingerprint FROM gdprcrm.key_info()")

say "6. The key survives a restart unchanged"
pg_ctl restart
after=$(as_run_user "$bindir/psql" -X -Atq -h "$demo" -p "$port" -d demo -c "SELECT fingerprint FROM gdprcrm.key_info()")
note "fingerprint before: $fingerprint"
note "fingerprint after:  $after"
[ "$fingerprint" = "$after" ] && note "same key"

say "7. Application roles reach no key material"
sql <<'SQL'
CREATE ROLE demo_app LOGIN;
SET ROLE demo_app;
\set ON_ERROR_STOP off
SELECT * FROM gdprcrm.key_info();
SHOW gdprcrm.key_command;
\set ON_ERROR_STOP on
RESET ROLE;
SQL

say "8. Random bytes from the fork-safe generator behind every nonce and key"
sql <<'SQL'
SELECT encode(gdprcrm.random_bytes(24), 'hex') AS a_24_byte_nonce;
SELECT count(DISTINCT gdprcrm.random_bytes(24)) AS distinct_of_100000
FROM generate_series(1, 100000);
SQL

say "9. Encrypted columns: one data key per person"
sql <<'SQL'
CREATE TABLE people (
    id bigint PRIMARY KEY,
    email gdprcrm.encrypted_text,
    email_bidx bytea,
    traits gdprcrm.encrypted_jsonb
);
CREATE INDEX ON people (email_bidx);
INSERT INTO people
SELECT id,
       gdprcrm.encrypt(id, email, 'crm.people.email'),
       gdprcrm.blind_index(gdprcrm.normalize_email(email), 'email'),
       gdprcrm.encrypt(id, traits, 'crm.people.traits')
FROM (VALUES (1, 'Ada.Lovelace@Example.org', '{"plan": "pro"}'::jsonb),
             (2, 'alan@example.com',         '{"plan": "free"}'),
             (3, 'grace@example.net',        '{"plan": "team"}')) AS v(id, email, traits);
-- What the table holds: envelopes, not emails.
SELECT id, left(email::text, 40) || '...' AS stored_email FROM people ORDER BY id;
-- What an authorised query reads.
SELECT id, gdprcrm.decrypt(email, 'crm.people.email', id) AS email,
       gdprcrm.decrypt(traits, 'crm.people.traits', id) AS traits
FROM people ORDER BY id;
SQL

say "10. Lookup by email through the blind index (an index scan, no decryption)"
sql <<'SQL'
EXPLAIN (COSTS OFF) SELECT id FROM people
WHERE email_bidx = gdprcrm.blind_index(gdprcrm.normalize_email(' ada.lovelace@EXAMPLE.org '), 'email');
SELECT id, gdprcrm.decrypt(email, 'crm.people.email', id) AS email FROM people
WHERE email_bidx = gdprcrm.blind_index(gdprcrm.normalize_email(' ada.lovelace@EXAMPLE.org '), 'email');
SQL

say "11. Ciphertext is bound to its person and column"
sql <<'SQL'
\set ON_ERROR_STOP off
-- Alan's email copied into Grace's row:
SELECT gdprcrm.decrypt(p2.email, 'crm.people.email', 3) FROM people p2 WHERE id = 2;
-- Decrypted as if it were another column:
SELECT gdprcrm.decrypt(email, 'crm.people.name', id) FROM people WHERE id = 2;
-- Plaintext cannot be stored in an encrypted column:
INSERT INTO people (id, email) VALUES (4, 'someone@example.com');
\set ON_ERROR_STOP on
SQL

say "12. Erasure by destroying one key (crypto-shredding)"
sql <<'SQL'
SELECT gdprcrm.shred_subject_key(2) AS alan_erased;
SELECT id, gdprcrm.decrypt(email, 'crm.people.email', id) AS email,
       gdprcrm.is_erased(email) AS erased
FROM people ORDER BY id;
-- The key table keeps a tombstone, never a key:
SELECT subject, wrapped_key IS NULL AS key_gone, destroyed_at IS NOT NULL AS tombstone
FROM gdprcrm.subject_keys ORDER BY subject;
SQL

say "13. A key command that prints anything but a key stops the server"
pg_ctl stop
echo "gdprcrm.key_command = 'echo not-a-key-but-a-secret'" >> "$data/postgresql.conf"
if pg_ctl start 2>/dev/null; then
    note "unexpected: the server started"; exit 1
fi
note "pg_ctl start failed; the log says:"
tail -n 3 "$demo/server.log" | sed 's/^/     /'
if grep -q 'not-a-key-but-a-secret' "$demo/server.log"; then
    note "unexpected: the command's output reached the log"; exit 1
fi
note "(what the command printed appears nowhere in the log)"
sed -i '$d' "$data/postgresql.conf"
pg_ctl start
note "with the setting removed the server starts again with the same key:"
sql -c "SELECT fingerprint = '$fingerprint' AS same_key FROM gdprcrm.key_info()"

say "Done"
note "test suite: bash test/run.sh    reference: doc/reference.md"
