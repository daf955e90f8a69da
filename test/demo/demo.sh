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

say "9. A key command that prints anything but a key stops the server"
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
