#!/usr/bin/env bash
# How often gdprcrm.check_unrestricted() takes an ordinary number for a
# payment card number, and what a long document costs it.
#
#   bash test/bench/card_false_positives.sh          (N=200000 SEED=0.2026)
#
# Starts a private PostgreSQL 15 instance with the installed gdprcrm
# preloaded, generates N samples of each kind below from a fixed seed (the
# same samples on every run), checks each one as a JSON string with
# check_unrestricted() and prints, per kind and per variant, how many were
# refused.  The samples are ordinary numbers, so every refusal is a false
# positive.  Kinds (variants share the kind's N):
#   order id    random digits, no leading zero, length uniform in 6..20
#   phone       international formats, e.g. +44 20 7946 0958, +1-202-555-0143
#   timestamp   unix seconds, milliseconds, microseconds, 2015-2030 and
#               after May 2033, when milliseconds and microseconds start with 2
#   date        ISO 8601 dates and times, 2000-2035, and two dates in a row
#   iban        IBANs of several countries with valid check digits, printed
#               in groups of four and compact, and printed German ones with
#               random check digits (IBAN-shaped, but mostly invalid)
#   text        numbers in text: "order 123456 qty 2 price 1999", numbers
#               side by side with single spaces, lists
# With python3, the same samples also go through models of four rules: the
# 0.4.0 one (a whole run of digits only), the one implemented (checked
# against the extension: the disagreements must be 0), any part of a run
# made of whole groups, and any 13 to 19 digits of a run; see
# doc/security.md for why the implemented one.
# Then it times documents of 100 kB and 1 MB: time must grow with the size,
# not with its square.
set -euo pipefail
cd "$(dirname "$0")/../.."
. test/lib.sh

n=${N:-200000}
seed=${SEED:-0.2026}
bindir=$("$PG_CONFIG" --bindir)
dir=$(mktemp -d /tmp/gdprcrm-bench-cards.XXXXXX)
port=5496

cleanup() { as_run_user "$bindir/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

init_private_instance "$dir" "$port" "max_parallel_workers_per_gather = 0" "jit = off" "autovacuum = off"
as_run_user "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w start >/dev/null
psql() { as_run_user "$bindir/psql" -X -q -h "$dir" -p $port -d postgres -v ON_ERROR_STOP=1 "$@"; }

echo "generating $n samples of each kind (seed $seed) and checking them"
psql <<SQL
CREATE EXTENSION gdprcrm;
CREATE SCHEMA bench;
-- n random digits (n <= 30), and the same without a leading zero.
CREATE FUNCTION bench.d(n int) RETURNS text LANGUAGE sql VOLATILE AS
\$\$ SELECT left(lpad(floor(random() * 1e15)::bigint::text, 15, '0') ||
                 lpad(floor(random() * 1e15)::bigint::text, 15, '0'), n) \$\$;
CREATE FUNCTION bench.nz(n int) RETURNS text LANGUAGE sql VOLATILE AS
\$\$ SELECT (1 + floor(random() * 9))::int::text || bench.d(n - 1) \$\$;
-- An integer in lo..hi.
CREATE FUNCTION bench.r(lo int, hi int) RETURNS int LANGUAGE sql VOLATILE AS
\$\$ SELECT lo + floor(random() * (hi - lo + 1))::int \$\$;
CREATE FUNCTION bench.letters(n int) RETURNS text LANGUAGE sql VOLATILE AS
\$\$ SELECT string_agg(chr(65 + floor(random() * 26)::int), '') FROM generate_series(1, n) \$\$;
-- An IBAN with its check digits: 98 minus the remainder modulo 97 of
-- bban, country and 00, letters read as 10 to 35 (ISO 13616).
CREATE FUNCTION bench.iban(country text, bban text) RETURNS text LANGUAGE sql IMMUTABLE AS
\$\$ SELECT country || lpad((98 - mod(string_agg(CASE WHEN ascii(c) BETWEEN 65 AND 90 THEN (ascii(c) - 55)::text ELSE c END,
                                                  '' ORDER BY i)::numeric, 97))::text, 2, '0') || bban
    FROM regexp_split_to_table(bban || country || '00', '') WITH ORDINALITY AS t(c, i) \$\$;
-- s split into groups of four, as printed IBANs are.
CREATE FUNCTION bench.fours(s text) RETURNS text LANGUAGE sql IMMUTABLE AS
\$\$ SELECT rtrim(regexp_replace(s, '(.{4})', '\1 ', 'g')) \$\$;

CREATE TABLE bench.samples (id bigserial, kind text, variant text, s text, refused boolean);
SELECT setseed($seed) \gset

INSERT INTO bench.samples (kind, variant, s)
SELECT 'order id', CASE WHEN len < 13 THEN '6-12 digits' WHEN len < 20 THEN '13-19 digits' ELSE '20 digits' END,
       bench.nz(len)
FROM (SELECT bench.r(6, 20) AS len FROM generate_series(1, $n)) AS g;

INSERT INTO bench.samples (kind, variant, s)
SELECT 'phone', v, CASE v
    WHEN '+44 20 7946 0958'     THEN '+44 20 ' || bench.d(4) || ' ' || bench.d(4)
    WHEN '+44 7911 123456'      THEN '+44 7' || bench.d(3) || ' ' || bench.d(6)
    WHEN '+1-202-555-0143'      THEN '+1-' || bench.r(2, 9) || bench.d(2) || '-' || bench.r(2, 9) || bench.d(2) || '-' || bench.d(4)
    WHEN '+1 (202) 555-0143'    THEN '+1 (' || bench.r(2, 9) || bench.d(2) || ') ' || bench.r(2, 9) || bench.d(2) || '-' || bench.d(4)
    WHEN '0044 20 7946 0958'    THEN '0044 20 ' || bench.d(4) || ' ' || bench.d(4)
    WHEN '+49 30 901820'        THEN '+49 ' || bench.r(2, 9) || bench.d(1) || ' ' || bench.nz(bench.r(6, 8))
    WHEN '+49 151 23456789'     THEN '+49 15' || bench.d(1) || ' ' || bench.d(8)
    WHEN '+33 6 12 34 56 78'    THEN '+33 ' || bench.r(1, 9) || ' ' || bench.d(2) || ' ' || bench.d(2) || ' ' || bench.d(2) || ' ' || bench.d(2)
    WHEN '+39 333 123 4567'     THEN '+39 3' || bench.d(2) || ' ' || bench.d(3) || ' ' || bench.d(4)
    WHEN '+55 11 91234 5678'    THEN '+55 ' || bench.r(11, 99) || ' 9' || bench.d(4) || ' ' || bench.d(4)
    WHEN '+61 412 345 678'      THEN '+61 4' || bench.d(2) || ' ' || bench.d(3) || ' ' || bench.d(3)
    WHEN '+62 812 3456 7890'    THEN '+62 8' || bench.d(2) || ' ' || bench.d(4) || ' ' || bench.d(4)
    WHEN '+7 912 345-67-89'     THEN '+7 9' || bench.d(2) || ' ' || bench.d(3) || '-' || bench.d(2) || '-' || bench.d(2)
    WHEN '+81 90-1234-5678'     THEN '+81 90-' || bench.d(4) || '-' || bench.d(4)
    WHEN '+86 138 0013 8000'    THEN '+86 1' || bench.r(3, 9) || bench.d(1) || ' ' || bench.d(4) || ' ' || bench.d(4)
    WHEN '+91 98765 43210'      THEN '+91 ' || bench.r(6, 9) || bench.d(4) || ' ' || bench.d(5)
    END
FROM (SELECT (ARRAY['+44 20 7946 0958', '+44 7911 123456', '+1-202-555-0143', '+1 (202) 555-0143',
                    '0044 20 7946 0958', '+49 30 901820', '+49 151 23456789', '+33 6 12 34 56 78',
                    '+39 333 123 4567', '+55 11 91234 5678', '+61 412 345 678', '+62 812 3456 7890',
                    '+7 912 345-67-89', '+81 90-1234-5678', '+86 138 0013 8000', '+91 98765 43210'])[bench.r(1, 16)] AS v
      FROM generate_series(1, $n)) AS g;

INSERT INTO bench.samples (kind, variant, s)
SELECT 'timestamp', v, CASE
    WHEN v LIKE 'seconds%' THEN floor(t)::bigint::text
    WHEN v LIKE 'milli%' THEN floor(t * 1e3)::bigint::text
    ELSE floor(t * 1e6)::bigint::text END
FROM (SELECT v, CASE WHEN v LIKE '%2015-2030' THEN 1420070400 + random() * (1893456000 - 1420070400)
                     ELSE 2000000000 + random() * (2208988800 - 2000000000) END AS t
      FROM (SELECT (ARRAY['seconds, 2015-2030', 'milliseconds, 2015-2030', 'microseconds, 2015-2030',
                          'milliseconds, 2033-05-18 to 2040', 'microseconds, 2033-05-18 to 2040'])[bench.r(1, 5)] AS v
            FROM generate_series(1, $n)) AS g) AS h;

INSERT INTO bench.samples (kind, variant, s)
SELECT 'date', v, CASE v
    WHEN '2026-03-01' THEN to_char(t, 'YYYY-MM-DD')
    WHEN '2026-03-01 10:15:00' THEN to_char(t, 'YYYY-MM-DD HH24:MI:SS')
    WHEN '2026-03-01T10:15:00.123456+02:00' THEN to_char(t, 'YYYY-MM-DD"T"HH24:MI:SS.US') || '+02:00'
    WHEN '20260301T101500Z' THEN to_char(t, 'YYYYMMDD"T"HH24MISS"Z"')
    WHEN '2026-03-01 2026-04-30' THEN to_char(t, 'YYYY-MM-DD') || ' ' || to_char(t + random() * interval '400 days', 'YYYY-MM-DD')
    END
FROM (SELECT (ARRAY['2026-03-01', '2026-03-01 10:15:00', '2026-03-01T10:15:00.123456+02:00',
                    '20260301T101500Z', '2026-03-01 2026-04-30'])[bench.r(1, 5)] AS v,
             timestamp '2000-01-01' + random() * interval '35 years' AS t
      FROM generate_series(1, $n)) AS g;

INSERT INTO bench.samples (kind, variant, s)
SELECT 'iban', v, CASE v
    WHEN 'DE89 3704 0044 0532 0130 00' THEN bench.fours(bench.iban('DE', bench.nz(8) || bench.d(10)))
    WHEN 'DE89370400440532013000' THEN bench.iban('DE', bench.nz(8) || bench.d(10))
    WHEN 'DE printed, random check digits' THEN bench.fours('DE' || bench.d(2) || bench.nz(8) || bench.d(10))
    WHEN 'ES91 2100 0418 4502 0005 1332' THEN bench.fours(bench.iban('ES', bench.d(20)))
    WHEN 'FR76 3000 6000 0112 3456 7890 189' THEN bench.fours(bench.iban('FR', bench.nz(5) || bench.d(18)))
    WHEN 'GB29 NWBK 6016 1331 9268 19' THEN bench.fours(bench.iban('GB', bench.letters(4) || bench.d(14)))
    WHEN 'NL91 ABNA 0417 1643 00' THEN bench.fours(bench.iban('NL', bench.letters(4) || bench.d(10)))
    WHEN 'IT60 X054 2811 1010 0000 0123 456' THEN bench.fours(bench.iban('IT', bench.letters(1) || bench.d(22)))
    WHEN 'CH93 0076 2011 6238 5295 7' THEN bench.fours(bench.iban('CH', bench.d(17)))
    END
FROM (SELECT (ARRAY['DE89 3704 0044 0532 0130 00', 'DE89370400440532013000', 'DE printed, random check digits',
                    'ES91 2100 0418 4502 0005 1332', 'FR76 3000 6000 0112 3456 7890 189',
                    'GB29 NWBK 6016 1331 9268 19', 'NL91 ABNA 0417 1643 00',
                    'IT60 X054 2811 1010 0000 0123 456', 'CH93 0076 2011 6238 5295 7'])[bench.r(1, 9)] AS v
      FROM generate_series(1, $n)) AS g;

INSERT INTO bench.samples (kind, variant, s)
SELECT 'text', v, CASE v
    WHEN 'order 123456 qty 2 price 1999' THEN
        'order ' || bench.nz(bench.r(5, 8)) || ' qty ' || bench.r(1, 20) || ' price ' || bench.r(99, 99999)
    WHEN '123456 2 1999 (3 numbers, 1-8 digits)' THEN
        bench.nz(bench.r(1, 8)) || ' ' || bench.nz(bench.r(1, 8)) || ' ' || bench.nz(bench.r(1, 8))
    WHEN '4 to 8 ids of 3-7 digits, spaces' THEN
        (SELECT string_agg(bench.nz(bench.r(3, 7)), ' ') FROM generate_series(1, k))
    WHEN '4 to 8 ids of 3-7 digits, commas' THEN
        (SELECT string_agg(bench.nz(bench.r(3, 7)), ', ') FROM generate_series(1, k))
    WHEN 'invoice 2026-000123 of 2026-03-01' THEN
        'invoice ' || bench.r(2000, 2035) || '-' || bench.d(6) || ' of ' || bench.r(2000, 2035) || '-' || lpad(bench.r(1, 12)::text, 2, '0') || '-' || lpad(bench.r(1, 28)::text, 2, '0')
    END
FROM (SELECT (ARRAY['order 123456 qty 2 price 1999', '123456 2 1999 (3 numbers, 1-8 digits)',
                    '4 to 8 ids of 3-7 digits, spaces', '4 to 8 ids of 3-7 digits, commas',
                    'invoice 2026-000123 of 2026-03-01'])[bench.r(1, 5)] AS v,
             bench.r(4, 8) AS k
      FROM generate_series(1, $n)) AS g;

CREATE FUNCTION bench.refused(s text) RETURNS boolean LANGUAGE plpgsql AS \$\$
BEGIN
    PERFORM gdprcrm.check_unrestricted(to_jsonb(s), 'sample');
    RETURN false;
EXCEPTION WHEN check_violation THEN
    RETURN true;
END \$\$;
UPDATE bench.samples SET refused = bench.refused(s);
SQL

echo
psql -P footer=off <<'SQL'
SELECT kind, coalesce(variant, '(all)') AS variant, count(*) AS samples,
       count(*) FILTER (WHERE refused) AS refused,
       round(100.0 * count(*) FILTER (WHERE refused) / count(*), 2) AS "refused %",
       min(s) FILTER (WHERE refused) AS "e.g."
FROM bench.samples
GROUP BY GROUPING SETS ((kind), (kind, variant))
ORDER BY kind, variant NULLS FIRST;
SQL

if command -v python3 >/dev/null; then
    echo
    echo "the same samples through models of four rules, percent refused: 0.4.0 (a whole run"
    echo "only), rule (the one implemented), groups (any part made of whole groups), any (any"
    echo "13 to 19 digits in a run)"
    psql -At -F $'\t' -c "SELECT kind, variant, s, refused FROM bench.samples ORDER BY id" | python3 -c '
import re, sys
from collections import defaultdict

def prefix_sums(d):
    # Prefix sums of digit values, plain and doubled (Luhn), apart for even
    # and odd positions: the Luhn sum of any window is then four lookups.
    sums = [[0], [0], [0], [0]]  # plain even, plain odd, doubled even, doubled odd
    for i, c in enumerate(d):
        v = ord(c) - 48
        for k, add in enumerate((v, v, 2 * v - 9 if v > 4 else 2 * v, 2 * v - 9 if v > 4 else 2 * v)):
            sums[k].append(sums[k][-1] + (add if k % 2 == i % 2 else 0))
    return sums

def is_card(d, sums, a, b):
    # d[a:b] starts with 2 to 6 and passes Luhn: digit i is doubled when
    # b - 1 - i is odd, i.e. when i and b - 1 differ in parity.
    if not "2" <= d[a] <= "6":
        return False
    last = (b - 1) % 2
    plain = sums[last][b] - sums[last][a]
    doubled = sums[2 + 1 - last][b] - sums[2 + 1 - last][a]
    return (plain + doubled) % 10 == 0

run_re = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
group_re = re.compile(r"[0-9]+")
head_re = re.compile(r"(?<![0-9A-Za-z])[A-Za-z]{2}[0-9]{2}")

def iban_valid(chars):
    x = chars[4:] + chars[:4]
    return int("".join(str(int(c, 36)) for c in x)) % 97 == 1

def iban_spans(s):
    # (start, end) of valid IBANs, compact or printed in groups of four
    spans, until = [], 0
    for m in head_re.finditer(s):
        p = m.start()
        if p < until or m.end() >= len(s):
            continue
        end = p
        if s[m.end()] == " ":
            g = re.match(r"(?: [0-9A-Za-z]{4})*(?: [0-9A-Za-z]{1,4})?(?![0-9A-Za-z])", s[m.end():])
            # every complete group end is a candidate; the last valid one wins
            pos, chars = m.end(), s[p:m.end()]
            for grp in re.findall(r" ([0-9A-Za-z]{1,4})", g.group(0)):
                pos += 1 + len(grp)
                chars += grp
                if len(chars) - 4 > 30:
                    break
                if len(chars) - 4 >= 11 and iban_valid(chars):
                    end = pos
        else:
            t = re.match(r"[0-9A-Za-z]*", s[m.end():]).group(0)
            if 11 <= len(t) <= 30 and iban_valid(s[p:m.end()] + t):
                end = m.end() + len(t)
        if end > p:
            spans.append((p, end))
            until = end
    return spans

def card_shaped(lens):
    # one group; fours with a last group of 1 to 4; 4-6-5 or 4-6-4
    return (len(lens) == 1 or (all(x == 4 for x in lens[:-1]) and lens[-1] <= 4)
            or lens in ([4, 6, 5], [4, 6, 4]))

def rules(s):
    """0.4.0 (whole run), implemented (whole run, or a card-shaped part not
    starting inside a valid IBAN), any window of whole groups, any window"""
    whole = shaped = groups = anywhere = False
    spans = None
    for m in run_re.finditer(s):
        gm = list(group_re.finditer(s, m.start(), m.end()))
        parts = [g.group(0) for g in gm]
        d = "".join(parts)
        if len(d) < 13:
            continue
        if spans is None:
            spans = iban_spans(s)
        sums = prefix_sums(d)
        bounds = [0]
        for p in parts:
            bounds.append(bounds[-1] + len(p))
        whole = whole or (len(d) <= 19 and is_card(d, sums, 0, len(d)))
        for i in range(len(parts)):
            in_iban = any(a <= gm[i].start() < b for a, b in spans)
            for j in range(i + 1, len(parts) + 1):
                a, b = bounds[i], bounds[j]
                if 13 <= b - a <= 19 and is_card(d, sums, a, b):
                    groups = True
                    lens = [len(p) for p in parts[i:j]]
                    shaped = shaped or (i == 0 and j == len(parts)) or (not in_iban and card_shaped(lens))
        anywhere = anywhere or any(is_card(d, sums, a, b) for a in range(len(d) - 12)
                                   for b in range(a + 13, min(a + 19, len(d)) + 1))
    return whole, shaped, groups, anywhere

stats = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
disagree = 0
for line in sys.stdin:
    kind, variant, s, refused = line.rstrip("\n").split("\t")
    found = rules(s)
    for key in ((kind, "(all)"), (kind, variant)):
        st = stats[key]
        st[0] += 1
        for k in range(4):
            st[1 + k] += found[k]
    disagree += found[1] != (refused == "t")
print("%-10s %-38s %8s %7s %7s %7s %7s" % ("kind", "variant", "samples", "0.4.0", "rule", "groups", "any"))
for (kind, variant), st in sorted(stats.items()):
    print("%-10s %-38s %8d %7.2f %7.2f %7.2f %7.2f" % ((kind, variant, st[0]) + tuple(100.0 * x / st[0] for x in st[1:5])))
print("samples where the extension and the model of its rule disagree: %d" % disagree)
'
fi

echo
echo "one document of digits, milliseconds per check (median of 5):"
psql -At <<'SQL'
CREATE FUNCTION bench.time_check(doc jsonb) RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz;
    ms numeric[] := '{}';
BEGIN
    FOR i IN 1 .. 5 LOOP
        t0 := clock_timestamp();
        PERFORM gdprcrm.check_unrestricted(doc, 'sample');
        ms := ms || round(extract(epoch FROM clock_timestamp() - t0) * 1000, 2);
    END LOOP;
    RETURN (SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY x) FROM unnest(ms) AS x);
END $$;
SELECT format('%-44s %10s %10s', 'shape (none of them a card)', '100 kB', '1 MB');
SELECT format('%-44s %10s %10s', label, bench.time_check(to_jsonb(repeat(unit, 100000 / length(unit)))),
              bench.time_check(to_jsonb(repeat(unit, 1000000 / length(unit)))))
FROM (VALUES ('one group: 4444...', '4'),
             ('groups of 2 joined by spaces: 20 20 20 ...', '20 '),
             ('groups of 4 joined by dashes: 2000-2000-...', '2000-'),
             ('groups not starting 2-6: 7 7 7 ...', '7 '),
             ('IBAN-like: DE12 3456 DE12 3456 ...', 'DE12 3456 '),
             ('no digits', 'x')) AS t(label, unit);
SQL
