#!/usr/bin/env bash
# Encrypted columns against plain text and pgcrypto, in one run.
#
#   bash test/bench/encryption.sh                # 1,000,000 rows, ~10 minutes
#   ROWS=100000 bash test/bench/encryption.sh    # quick run
#
# Starts a private PostgreSQL 15 instance (a temporary directory, a Unix
# socket in it and no TCP listener, gdprcrm preloaded with a development
# key), then fills LOGGED tables (id bigint PRIMARY KEY, email) with ROWS
# short addresses 'user' || i || '@example.com' belonging to SUBJECTS
# subjects (i % SUBJECTS + 1):
#
#   inserts  plain text; gdprcrm.encrypt into encrypted_text with
#            xchacha20poly1305 and with aes256gcm; pgcrypto encrypt_iv with
#            aes-cbc/pad:pkcs, a fixed 32-byte key and a random IV per row
#            (stored as IV || ciphertext); pgcrypto pgp_sym_encrypt on
#            ROWS/10 rows, scaled x10;
#   scans    count(length(...)) over each table, decrypting: plain text,
#            gdprcrm.decrypt per cipher, decrypt_iv, pgp_sym_decrypt
#            (ROWS/10 rows, scaled x10).
#
# Every subject's key is created before anything is timed (in a CRM a
# person's key exists before their columns are written); creating them is
# timed separately.  The timed inserts and warm scans run in one session
# whose key cache holds every subject's key; one insert and one scan per
# cipher are then timed in fresh connections (cold key cache).  Each timed
# statement gets a fresh table (inserts) and a CHECKPOINT first; each
# measurement is repeated REPS times, round robin, and the median reported.
#
# Prints the table, table and WAL sizes, and PASS/MISS against the targets
# (informational: the exit status is 0 unless something failed).  The
# instance is stopped and removed at exit.  gdprcrm must be installed
# (make install) into the PostgreSQL that PG_CONFIG names.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../lib.sh"    # PG_CONFIG, run_user, as_run_user

ROWS=${ROWS:-1000000}
SUBJECTS=${SUBJECTS:-100000}
REPS=${REPS:-3}
for v in ROWS SUBJECTS REPS; do
    if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
        echo "$v must be a positive integer, not '${!v}'" >&2
        exit 2
    fi
done
if [ "$ROWS" -lt 10 ]; then
    echo "ROWS must be at least 10" >&2
    exit 2
fi
PGP_ROWS=$((ROWS / 10))

bindir=$("$PG_CONFIG" --bindir)
if [ ! -f "$("$PG_CONFIG" --sharedir)/extension/gdprcrm.control" ]; then
    echo "gdprcrm is not installed into $("$PG_CONFIG" --sharedir); run make install first" >&2
    exit 1
fi

CTX='crm.people.email'
EMAIL="'user' || i || '@example.com'"
CBC_KEY="decode('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'hex')"
VARIANTS=(plain xchacha aes cbc pgp)

work=$(mktemp -d /tmp/gdprcrm-bench.XXXXXX)
data=$work/data
port=5432
results=$work/results

cleanup() {
    if [ -f "$data/postmaster.pid" ]; then
        as_run_user "$bindir/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psql_run() {
    as_run_user "$bindir/psql" -X -q -At -v ON_ERROR_STOP=1 \
        -h "$work" -p "$port" -d bench "$@"
}

# ---------------------------------------------------------------- machine
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
if grep -qw aes /proc/cpuinfo; then aes=yes; else aes=no; fi
sodium=$(dpkg-query -W -f='${Version}' libsodium23 2>/dev/null || echo unknown)
echo "== machine"
echo "cpu: $cpu, $(nproc) cores, AES instructions: $aes"
echo "kernel $(uname -r), libsodium $sodium, $("$bindir/postgres" --version)"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (figures vary on a shared machine)"

# ---------------------------------------------------------------- instance
echo "== starting a private instance in $work"
[ "$(id -u)" -eq 0 ] && chown "$run_user" "$work"
as_run_user "$bindir/initdb" -D "$data" -A trust -U postgres -E UTF8 --locale=C >/dev/null
cat >> "$data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$work'
port = $port
shared_preload_libraries = 'gdprcrm'
shared_buffers = 1GB
max_wal_size = 8GB
min_wal_size = 1GB
checkpoint_timeout = 30min
maintenance_work_mem = 256MB
# Timed statements run alone: no autovacuum, no parallel or JIT plans
# (gdprcrm.decrypt is parallel restricted, plain scans would go parallel).
autovacuum = off
max_parallel_workers_per_gather = 0
jit = off
CONF
as_run_user "$bindir/pg_ctl" -D "$data" -l "$work/server.log" -w start >/dev/null
as_run_user "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$work" -p "$port" -d postgres \
    -c "CREATE DATABASE bench"
psql_run -c "CREATE EXTENSION gdprcrm" -c "CREATE EXTENSION pgcrypto"
echo "rows $ROWS (pgp: $PGP_ROWS, scaled x$((ROWS / PGP_ROWS))), subjects $SUBJECTS, $REPS runs per measurement"

# ---------------------------------------------------------------- SQL pieces
# The table, its insert and its scan, per variant.
ddl() {
    case $1 in
        plain)       echo "CREATE TABLE bench_$1 (id bigint PRIMARY KEY, email text NOT NULL)" ;;
        xchacha|aes) echo "CREATE TABLE bench_$1 (id bigint PRIMARY KEY, email gdprcrm.encrypted_text NOT NULL)" ;;
        cbc|pgp)     echo "CREATE TABLE bench_$1 (id bigint PRIMARY KEY, email bytea NOT NULL)" ;;
    esac
}
cipher_of() {
    case $1 in
        xchacha) echo xchacha20poly1305 ;;
        aes)     echo aes256gcm ;;
    esac
}
rows_of() {
    if [ "$1" = pgp ]; then echo "$PGP_ROWS"; else echo "$ROWS"; fi
}
insert_sql() {    # variant table
    local n
    n=$(rows_of "$1")
    case $1 in
        plain)
            echo "INSERT INTO $2 SELECT i, $EMAIL FROM generate_series(1, $n) i" ;;
        xchacha|aes)
            echo "INSERT INTO $2 SELECT i, gdprcrm.encrypt(i % $SUBJECTS + 1, $EMAIL, '$CTX') FROM generate_series(1, $n) i" ;;
        cbc)
            # A subquery with a volatile target list is not flattened:
            # gen_random_bytes runs once per row and iv is that one value.
            echo "INSERT INTO $2 SELECT i, iv || encrypt_iv(convert_to($EMAIL, 'UTF8'), $CBC_KEY, iv, 'aes-cbc/pad:pkcs')" \
                 "FROM (SELECT i, gen_random_bytes(16) AS iv FROM generate_series(1, $n) i) s" ;;
        pgp)
            echo "INSERT INTO $2 SELECT i, pgp_sym_encrypt($EMAIL, 'password') FROM generate_series(1, $n) i" ;;
    esac
}
decrypted_expr() {    # the plaintext of column email, per variant
    case $1 in
        plain)       echo "email" ;;
        xchacha|aes) echo "gdprcrm.decrypt(email, '$CTX')" ;;
        cbc)         echo "convert_from(decrypt_iv(substr(email, 17), $CBC_KEY, substr(email, 1, 16), 'aes-cbc/pad:pkcs'), 'UTF8')" ;;
        pgp)         echo "pgp_sym_decrypt(email, 'password')" ;;
    esac
}

# timed KIND VARIANT RUN ROWS STATEMENT: CHECKPOINT, then time STATEMENT
# with clock_timestamp() and count the WAL it wrote.  Prints
# "RESULT kind variant run rows seconds wal_bytes" on stdout.
timed() {
    cat <<SQL
CHECKPOINT;
SELECT pg_current_wal_insert_lsn() AS lsn0 \gset
SELECT clock_timestamp() AS t0 \gset
$5;
SELECT round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz), 4) AS secs,
       pg_wal_lsn_diff(pg_current_wal_insert_lsn(), :'lsn0') AS wal \gset
\echo RESULT $1 $2 $3 $4 :secs :wal
SQL
}

# A scan that must see every row: count(length(...)) into :n, checked after.
scan_sql() {
    echo "SELECT count(length($(decrypted_expr "$1"))) AS n FROM bench_$1 \\gset"
}
check_n() {    # variant
    echo "SELECT :n = $(rows_of "$1") AS ok \\gset"
    echo "\\if :ok \\else \\warn 'scan of bench_$1 saw :n rows' \\q \\endif"
}

# ---------------------------------------------------------------- key creation
# Three runs of SUBJECTS first uses; the first creates the keys of the
# subjects the tables use, the others of subjects that no table uses.  Then
# the same statement again with every key cached in this session.
{
    echo "\\warn '== creating subject keys ($SUBJECTS subjects, before anything else is timed)'"
    for run in $(seq 1 "$REPS"); do
        first=$(( (run - 1) * 1000000000 + 1 ))
        last=$(( first + SUBJECTS - 1 ))
        timed keys create "$run" "$SUBJECTS" \
            "SELECT count(gdprcrm.encrypt(s, 'x', 'warm')) FROM generate_series($first, $last) s"
    done
    for run in $(seq 1 "$REPS"); do
        timed keys cached "$run" "$SUBJECTS" \
            "SELECT count(gdprcrm.encrypt(s, 'x', 'warm')) FROM generate_series(1, $SUBJECTS) s"
    done
} > "$work/keys.sql"
psql_run -f "$work/keys.sql" > "$results"

# ---------------------------------------------------------------- main session
{
    echo "\\warn '== loading the $SUBJECTS existing subject keys into this session''s key cache'"
    timed keys load 1 "$SUBJECTS" \
        "SELECT count(gdprcrm.encrypt(s, 'x', 'warm')) FROM generate_series(1, $SUBJECTS) s"

    for run in $(seq 1 "$REPS"); do
        for v in "${VARIANTS[@]}"; do
            echo "\\warn '== insert $v, run $run of $REPS'"
            echo "DROP TABLE IF EXISTS bench_$v;"
            echo "$(ddl "$v");"
            cipher=$(cipher_of "$v")
            [ -n "$cipher" ] && echo "SET gdprcrm.cipher = '$cipher';"
            timed insert "$v" "$run" "$(rows_of "$v")" "$(insert_sql "$v" "bench_$v")"
        done
    done
    echo "RESET gdprcrm.cipher;"

    echo "\\warn '== vacuum, sizes and correctness checks (untimed)'"
    for v in "${VARIANTS[@]}"; do
        echo "VACUUM (FREEZE, ANALYZE) bench_$v;"
        echo "SELECT pg_table_size('bench_$v') AS heap, pg_indexes_size('bench_$v') AS idx \\gset"
        echo "\\echo RESULT size $v 1 $(rows_of "$v") :heap :idx"
    done
    # Every row decrypts to what was written (this also warms the key cache
    # with decrypt, and the buffers); pgp is checked on a sample.
    for v in plain xchacha aes cbc; do
        echo "SELECT count(*) AS bad FROM bench_$v WHERE $(decrypted_expr "$v") IS DISTINCT FROM 'user' || id || '@example.com' \\gset"
        echo "\\if :bad \\warn 'bench_$v: :bad rows do not decrypt to what was written' \\q \\endif"
    done
    echo "SELECT count(*) AS bad FROM (SELECT * FROM bench_pgp ORDER BY id LIMIT 1000) s WHERE $(decrypted_expr pgp) IS DISTINCT FROM 'user' || id || '@example.com' \\gset"
    echo "\\if :bad \\warn 'bench_pgp: :bad rows do not decrypt to what was written' \\q \\endif"
    # Each table holds what it claims: the envelope's cipher byte, one IV per row.
    echo "SELECT count(*) FILTER (WHERE get_byte(gdprcrm.encrypted_text_send(email), 1) <> 1) AS bad FROM bench_xchacha \\gset"
    echo "\\if :bad \\warn 'bench_xchacha: :bad values not xchacha20poly1305' \\q \\endif"
    echo "SELECT count(*) FILTER (WHERE get_byte(gdprcrm.encrypted_text_send(email), 1) <> 2) AS bad FROM bench_aes \\gset"
    echo "\\if :bad \\warn 'bench_aes: :bad values not aes256gcm' \\q \\endif"
    echo "SELECT count(*) - count(DISTINCT substr(email, 1, 16)) AS bad FROM bench_cbc \\gset"
    echo "\\if :bad \\warn 'bench_cbc: :bad repeated IVs' \\q \\endif"

    for run in $(seq 1 "$REPS"); do
        for v in "${VARIANTS[@]}"; do
            echo "\\warn '== scan $v, run $run of $REPS'"
            timed scan "$v" "$run" "$(rows_of "$v")" "$(scan_sql "$v")"
            check_n "$v"
        done
    done
} > "$work/main.sql"
psql_run -f "$work/main.sql" >> "$results"

# ---------------------------------------------------------------- cold key cache
# Fresh connections: the keys exist but this backend has none cached.
for v in xchacha aes; do
    {
        echo "\\warn '== insert $v in a fresh connection (cold key cache)'"
        echo "$(ddl "$v" | sed "s/bench_$v/bench_cold/");"
        echo "SET gdprcrm.cipher = '$(cipher_of "$v")';"
        timed coldinsert "$v" 1 "$ROWS" "$(insert_sql "$v" bench_cold)"
        echo "DROP TABLE bench_cold;"
    } > "$work/cold.sql"
    psql_run -f "$work/cold.sql" >> "$results"
    {
        echo "\\warn '== scan $v in a fresh connection (cold key cache)'"
        timed coldscan "$v" 1 "$ROWS" "$(scan_sql "$v")"
        check_n "$v"
    } > "$work/cold.sql"
    psql_run -f "$work/cold.sql" >> "$results"
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- report
echo
echo "== results: $ROWS rows, median of $REPS runs, each after a CHECKPOINT"
echo "   subject keys ($SUBJECTS) existed and were cached before the timed statements;"
echo "   pgp rows are timed on $PGP_ROWS rows and their seconds scaled x$((ROWS / PGP_ROWS)) to compare with $ROWS"
echo
awk -v rows="$ROWS" -v subjects="$SUBJECTS" '
function median(key,    n, i, j, t, a) {
    n = split(vals[key], a, " ")
    for (i = 2; i <= n; i++)        # insertion sort, n is small
        for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function runs(key,    n, i, a, s) {
    n = split(vals[key], a, " ")
    s = ""
    for (i = 1; i <= n; i++) s = s (i > 1 ? " / " : "") sprintf("%.2f", a[i])
    return s
}
function mb(b) { return sprintf("%.1f", b / 1048576) }
$1 == "RESULT" {
    key = $2 " " $3
    vals[key] = vals[key] (key in vals ? " " : "") $6
    wal[key] = wal[key] (key in wal ? " " : "") $7
    n[key] = $5
}
END {
    label["plain"] = "plain text"
    label["xchacha"] = "gdprcrm xchacha20poly1305"
    label["aes"] = "gdprcrm aes256gcm"
    label["cbc"] = "pgcrypto encrypt_iv aes-cbc"
    label["pgp"] = "pgcrypto pgp_sym_encrypt (x10)"
    slabel["plain"] = "plain text"
    slabel["xchacha"] = "gdprcrm.decrypt xchacha20poly1305"
    slabel["aes"] = "gdprcrm.decrypt aes256gcm"
    slabel["cbc"] = "pgcrypto decrypt_iv aes-cbc"
    slabel["pgp"] = "pgcrypto pgp_sym_decrypt (x10)"
    split("plain xchacha aes cbc pgp", order, " ")

    fmt = "| %-44s | %8s | %10s | %8s | %-22s |\n"
    printf fmt, "operation", "seconds", "rows/s", "vs plain", "runs (s)"
    printf "|%s|%s|%s|%s|%s|\n", "----------------------------------------------", "---------:", "-----------:", "---------:", "------------------------"
    for (kind = 1; kind <= 2; kind++) {
        k = kind == 1 ? "insert" : "scan"
        base = median(k " plain")
        for (i = 1; i <= 5; i++) {
            v = order[i]; key = k " " v
            m = median(key)
            secs = m * rows / n[key]          # scaled to rows
            ratio[key] = secs / base
            name = (kind == 1 ? "insert " label[v] : "scan " slabel[v])
            printf fmt, name, sprintf("%.2f", secs), sprintf("%\047d", n[key] / m), sprintf("%.2fx", ratio[key]), runs(key)
        }
    }
    for (i = 2; i <= 3; i++) {
        v = order[i]
        key = "coldinsert " v
        if (key in vals) {
            m = vals[key]; r = m / median("insert plain")
            printf fmt, "insert " label[v] ", cold key cache", sprintf("%.2f", m), sprintf("%\047d", rows / m), sprintf("%.2fx", r), "one run"
        }
    }
    for (i = 2; i <= 3; i++) {
        v = order[i]
        key = "coldscan " v
        if (key in vals) {
            m = vals[key]; r = m / median("scan plain")
            printf fmt, "scan " slabel[v] ", cold key cache", sprintf("%.2f", m), sprintf("%\047d", rows / m), sprintf("%.2fx", r), "one run"
        }
    }

    print ""
    print "== storage: the table after its last insert (heap + primary key) and the WAL one insert wrote (median)"
    print ""
    sfmt = "| %-32s | %9s | %9s | %9s | %9s | %9s |\n"
    printf sfmt, "table", "heap MB", "index MB", "bytes/row", "WAL MB", "WAL B/row"
    printf "|%s|%s|%s|%s|%s|%s|\n", "----------------------------------", "----------:", "----------:", "----------:", "----------:", "----------:"
    for (i = 1; i <= 5; i++) {
        v = order[i]; key = "size " v
        split(vals[key] " " wal[key], s, " ")
        # size lines carry heap in $6 and index in $7
        heap = s[1]; idx = s[2]
        nw = split(wal["insert " v], w, " ")
        for (a = 2; a <= nw; a++) for (b = a; b > 1 && w[b - 1] + 0 > w[b] + 0; b--) { t = w[b]; w[b] = w[b - 1]; w[b - 1] = t }
        wm = nw % 2 ? w[(nw + 1) / 2] : (w[nw / 2] + w[nw / 2 + 1]) / 2
        printf sfmt, label[v], mb(heap), mb(idx), sprintf("%.1f", heap / n[key]), mb(wm), sprintf("%.1f", wm / n[key])
    }

    print ""
    print "== subject keys: " subjects " first uses of gdprcrm.encrypt(s, \047x\047, \047warm\047), median"
    c = median("keys create"); h = median("keys cached"); l = median("keys load")
    printf "creating %d keys:              %6.2f s  (%.1f us per key, %.1f us above a cached key; runs %s)\n", subjects, c, c * 1e6 / subjects, (c - h) * 1e6 / subjects, runs("keys create")
    printf "loading %d existing keys:      %6.2f s  (%.1f us per key, %.1f us above a cached key; one run, fresh connection)\n", subjects, l, l * 1e6 / subjects, (l - h) * 1e6 / subjects
    printf "same calls, every key cached:   %6.2f s  (%.1f us per call)\n", h, h * 1e6 / subjects

    print ""
    print "== targets (informational)"
    t[1] = "insert gdprcrm xchacha20poly1305 <= 1.8x plain insert"; r[1] = ratio["insert xchacha"]; lim[1] = 1.8
    t[2] = "insert gdprcrm aes256gcm <= 1.8x plain insert";         r[2] = ratio["insert aes"];     lim[2] = 1.8
    fast = ratio["scan xchacha"] < ratio["scan aes"] ? "xchacha20poly1305" : "aes256gcm"
    t[3] = "decrypting scan, fastest cipher (" fast ") <= 4x plain scan"
    r[3] = ratio["scan xchacha"] < ratio["scan aes"] ? ratio["scan xchacha"] : ratio["scan aes"]; lim[3] = 4
    t[4] = "decrypting scan, xchacha20poly1305 <= 8x plain scan"; r[4] = ratio["scan xchacha"]; lim[4] = 8
    for (i = 1; i <= 4; i++)
        printf "%-4s %-62s %5.2fx%s\n", (r[i] <= lim[i] ? "PASS" : "MISS"), t[i], r[i],
            (r[i] <= lim[i] ? "" : sprintf("  (%.0f%% over)", (r[i] / lim[i] - 1) * 100))
}' "$results"
