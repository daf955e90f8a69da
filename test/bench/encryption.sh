#!/usr/bin/env bash
# Encrypted columns against plain text and pgcrypto, in one run.
#
#   bash test/bench/encryption.sh                # 1,000,000 rows, ~3 minutes on 2 cores
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
# timed separately.  The timed inserts and warm scans run in one connection
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
    PGOPTIONS='-c client_min_messages=warning' as_run_user "$bindir/psql" -X -q -At \
        -v ON_ERROR_STOP=1 -h "$work" -p "$port" -d bench "$@"
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
init_private_instance "$work" "$port" \
    "shared_buffers = 1GB" "max_wal_size = 8GB" "min_wal_size = 1GB" \
    "checkpoint_timeout = 30min" "maintenance_work_mem = 256MB" \
    "autovacuum = off" "max_parallel_workers_per_gather = 0" "jit = off"
# Timed statements run alone: no autovacuum, no parallel or JIT plans
# (gdprcrm.decrypt is parallel restricted, plain scans would go parallel).
if ! as_run_user "$bindir/pg_ctl" -D "$data" -l "$work/server.log" -w start >/dev/null; then
    cat "$work/server.log" >&2
    exit 1
fi
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
    local stmt=$5
    case $stmt in *'\gset') ;; *) stmt="$stmt;" ;; esac
    cat <<SQL
CHECKPOINT;
SELECT pg_current_wal_insert_lsn() AS lsn0 \gset
SELECT clock_timestamp() AS t0 \gset
$stmt
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
    echo "SELECT bench_check(:n = $(rows_of "$1"), 'scan of bench_$1 saw ' || :n || ' rows');"
}
# check CONDITION MESSAGE FROM...: fail the run unless CONDITION holds.
check() {
    echo "SELECT bench_check($1, $2) FROM $3;"
}

# ---------------------------------------------------------------- key creation
psql_run -c "CREATE FUNCTION bench_check(ok boolean, msg text) RETURNS void LANGUAGE plpgsql
             AS \$\$BEGIN IF NOT ok THEN RAISE EXCEPTION 'check failed: %', msg; END IF; END\$\$"

# REPS runs of SUBJECTS first uses, each in a fresh connection (an empty
# key cache, nothing evicted).  The first run creates the keys of the
# subjects the tables use, the others those of subjects no table uses.
# After the last run, the same statement again: every key cached.
echo "== creating the keys of $SUBJECTS subjects before anything else is timed"
for run in $(seq 1 "$REPS"); do
    first=$(( (run - 1) * 1000000000 + 1 ))
    last=$(( first + SUBJECTS - 1 ))
    {
        timed keys create "$run" "$SUBJECTS" \
            "SELECT count(gdprcrm.encrypt(s, 'x', 'warm')) FROM generate_series($first, $last) s"
        if [ "$run" -eq "$REPS" ]; then
            for again in $(seq 1 "$REPS"); do
                timed keys cached "$again" "$SUBJECTS" \
                    "SELECT count(gdprcrm.encrypt(s, 'x', 'warm')) FROM generate_series($first, $last) s"
            done
        fi
    } > "$work/keys.sql"
    psql_run -f "$work/keys.sql" >> "$results"
done

# ---------------------------------------------------------------- main connection
{
    echo "\\warn '== loading the $SUBJECTS existing subject keys into this backend''s key cache'"
    timed keys load 1 "$SUBJECTS" \
        "SELECT count(gdprcrm.encrypt(s, 'x', 'warm')) FROM generate_series(1, $SUBJECTS) s"

    # Untimed: the first inserts into a new instance also create WAL
    # segments (later ones reuse them) and fault in shared buffers.
    echo "\\warn '== warm-up (untimed): one insert of each kind but pgp'"
    for v in plain xchacha aes cbc; do
        echo "$(ddl "$v");"
        cipher=$(cipher_of "$v")
        if [ -n "$cipher" ]; then echo "SET gdprcrm.cipher = '$cipher';"; fi
        echo "$(insert_sql "$v" "bench_$v");"
    done

    for run in $(seq 1 "$REPS"); do
        for v in "${VARIANTS[@]}"; do
            echo "\\warn '== insert $v, run $run of $REPS'"
            echo "DROP TABLE IF EXISTS bench_$v;"
            echo "$(ddl "$v");"
            cipher=$(cipher_of "$v")
            if [ -n "$cipher" ]; then echo "SET gdprcrm.cipher = '$cipher';"; fi
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
    # Every row decrypts to what was written (this also warms the buffers
    # and has this backend decrypt before its timed scans); pgp is checked
    # on a sample.
    for v in plain xchacha aes cbc; do
        check "count(*) = 0" "format('bench_$v: %s rows do not decrypt to what was written', count(*))" \
            "bench_$v WHERE $(decrypted_expr "$v") IS DISTINCT FROM 'user' || id || '@example.com'"
    done
    check "count(*) = 0" "format('bench_pgp: %s rows do not decrypt to what was written', count(*))" \
        "(SELECT * FROM bench_pgp ORDER BY id LIMIT 1000) s WHERE $(decrypted_expr pgp) IS DISTINCT FROM 'user' || id || '@example.com'"
    # Each table holds what it claims: the envelope's cipher byte (1 is
    # xchacha20poly1305, 2 aes256gcm), one random IV per row.
    check "bool_and(get_byte(gdprcrm.encrypted_text_send(email), 1) = 1)" "'bench_xchacha: not all xchacha20poly1305'" bench_xchacha
    check "bool_and(get_byte(gdprcrm.encrypted_text_send(email), 1) = 2)" "'bench_aes: not all aes256gcm'" bench_aes
    check "count(DISTINCT substr(email, 1, 16)) = count(*)" "'bench_cbc: repeated IVs'" bench_cbc

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
echo "   runs (s): what each run measured (pgp: on $PGP_ROWS rows, unscaled)"
echo
awk -v rows="$ROWS" -v subjects="$SUBJECTS" '
function sortv(list, a,    n, i, j, t) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++)        # insertion sort, n is small
        for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return n
}
function med(list,    a, n) {
    n = sortv(list, a)
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function median(key) { return med(vals[key]) }
function runs(key,    n, i, a, s) {
    n = split(vals[key], a, " ")
    s = ""
    for (i = 1; i <= n; i++) s = s (i > 1 ? " / " : "") sprintf("%.3f", a[i])
    return s
}
function commas(x,    s, r) {
    s = sprintf("%.0f", x); r = ""
    while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) }
    return s r
}
function mb(b) { return sprintf("%.1f", b / 1048576) }
function row(name, secs, rate, ratio, note) {
    printf "| %-56s | %7.3f | %10s | %8s | %-24s |\n", name, secs, commas(rate), sprintf("%.2fx", ratio), note
}
$1 == "RESULT" {
    key = $2 " " $3
    vals[key] = vals[key] (key in vals ? " " : "") $6
    extra[key] = extra[key] (key in extra ? " " : "") $7
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

    printf "| %-56s | %7s | %10s | %8s | %-24s |\n", "operation", "seconds", "rows/s", "vs plain", "runs (s)"
    printf "|%s|%s|%s|%s|%s|\n", "----------------------------------------------------------", "--------:", "-----------:", "---------:", "--------------------------"
    for (kind = 1; kind <= 2; kind++) {
        k = kind == 1 ? "insert" : "scan"
        base = median(k " plain")
        for (i = 1; i <= 5; i++) {
            v = order[i]; key = k " " v
            m = median(key)
            secs = m * rows / n[key]          # scaled to rows
            ratio[key] = secs / base
            row((kind == 1 ? "insert " label[v] : "scan " slabel[v]), secs, n[key] / m, ratio[key], runs(key))
        }
    }
    for (i = 2; i <= 3; i++) {
        key = "coldinsert " order[i]
        if (key in vals)
            row("insert " label[order[i]] ", cold key cache", vals[key], rows / vals[key], vals[key] / median("insert plain"), "one run")
    }
    for (i = 2; i <= 3; i++) {
        key = "coldscan " order[i]
        if (key in vals)
            row("scan " slabel[order[i]] ", cold key cache", vals[key], rows / vals[key], vals[key] / median("scan plain"), "one run")
    }

    print ""
    print "== storage: each table after its last insert (heap, primary key) and the WAL one insert wrote (median)"
    print ""
    sfmt = "| %-32s | %8s | %8s | %9s | %8s | %9s |\n"
    printf sfmt, "table", "heap MB", "index MB", "heap B/row", "WAL MB", "WAL B/row"
    printf "|%s|%s|%s|%s|%s|%s|\n", "----------------------------------", "---------:", "---------:", "-----------:", "---------:", "-----------:"
    for (i = 1; i <= 5; i++) {
        v = order[i]
        heap = vals["size " v]; idx = extra["size " v]
        w = med(extra["insert " v]); nr = n["insert " v]
        printf sfmt, label[v], mb(heap), mb(idx), sprintf("%.1f", heap / nr), mb(w), sprintf("%.1f", w / nr)
    }

    print ""
    print "== subject keys: " subjects " calls of gdprcrm.encrypt(s, \047x\047, \047warm\047), one per subject"
    c = median("keys create"); h = median("keys cached"); l = median("keys load")
    printf "creating the keys:        %6.2f s  %5.1f us per key, %5.1f us more than with a cached key (runs %s)\n", c, c * 1e6 / subjects, (c - h) * 1e6 / subjects, runs("keys create")
    printf "loading existing keys:    %6.2f s  %5.1f us per key, %5.1f us more than with a cached key (one run, fresh connection)\n", l, l * 1e6 / subjects, (l - h) * 1e6 / subjects
    printf "every key cached:         %6.2f s  %5.1f us per call (runs %s)\n", h, h * 1e6 / subjects, runs("keys cached")

    print ""
    print "== targets (informational)"
    t[1] = "insert, gdprcrm xchacha20poly1305 <= 1.8x plain insert"; r[1] = ratio["insert xchacha"]; lim[1] = 1.8
    t[2] = "insert, gdprcrm aes256gcm <= 1.8x plain insert";         r[2] = ratio["insert aes"];     lim[2] = 1.8
    fast = ratio["scan xchacha"] <= ratio["scan aes"] ? "xchacha" : "aes"
    t[3] = "decrypting scan, fastest cipher (" (fast == "aes" ? "aes256gcm" : "xchacha20poly1305") ") <= 4x plain scan"
    r[3] = ratio["scan " fast]; lim[3] = 4
    t[4] = "decrypting scan, xchacha20poly1305 <= 8x plain scan"; r[4] = ratio["scan xchacha"]; lim[4] = 8
    for (i = 1; i <= 4; i++)
        printf "%-4s  %-58s %5.2fx%s\n", (r[i] <= lim[i] ? "PASS" : "MISS"), t[i], r[i],
            (r[i] <= lim[i] ? "" : sprintf("  (%.0f%% over the target)", (r[i] / lim[i] - 1) * 100))
}' "$results"
