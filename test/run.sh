#!/usr/bin/env bash
# The whole gdprcrm test suite, from a fresh Debian 12 machine:
# dependencies, a -Wall -Wextra -Werror build, install, then pg_regress,
# isolation and TAP suites, each against temporary instances.  Ends with
# one line "N passed, N failed"; exits non-zero when anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
. test/lib.sh

passed=0
failed=0
work=$(mktemp -d /tmp/gdprcrm-test.XXXXXX)
chmod 755 "$work"

finish() {
    echo
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}

# count LABEL STATUS FILE: add one suite's results, read from its output.
count() {
    local label=$1 status=$2 out=$3 ok bad
    ok=$(grep -cE '\.\.\. ok|^ok [0-9]+' "$out")
    bad=$(grep -cE '\.\.\. (FAILED|failed)|^not ok [0-9]+|^Dubious, test returned' "$out")
    if [ "$status" -ne 0 ] && [ "$bad" -eq 0 ]; then
        bad=1   # the suite stopped before reporting a failure of its own
    fi
    passed=$((passed + ok))
    failed=$((failed + bad))
    printf '%-12s %4d passed, %d failed\n' "$label" "$ok" "$bad"
}

echo "== dependencies"
if ! bash test/deps.sh; then
    failed=$((failed + 1)); finish
fi

echo "== build (-Wall -Wextra -Werror) and install"
if build_and_install > "$work/build.log" 2>&1; then
    passed=$((passed + 1))
else
    cat "$work/build.log"
    failed=$((failed + 1)); finish
fi

copy_tree_for_run_user "$work/tree"
cd "$work/tree"

for suite in regress isolation tap; do
    echo "== $suite"
    as_run_user make -s check-$suite > "$work/$suite.log" 2>&1
    status=$?
    count "$suite" $status "$work/$suite.log"
    if [ $status -ne 0 ]; then
        grep -E 'FAILED|failed|not ok|Dubious' "$work/$suite.log" | head -40
        for diffs in regression.diffs output_iso/regression.diffs; do
            [ -f "$diffs" ] && head -200 "$diffs"
        done
        [ "$suite" = tap ] && tail -n 60 tmp_check/log/regress_log_* 2>/dev/null | head -300
    fi
done

echo "== fuzz (envelope decoder, 1,000,000 executions)"
if CC=clang-14 bash test/fuzz/run.sh 1000000 > "$work/fuzz.log" 2>&1; then
    passed=$((passed + 1))
    grep -E '^Done' "$work/fuzz.log"
else
    failed=$((failed + 1))
    tail -n 40 "$work/fuzz.log"
fi

# No server log of pg_regress or isolation may hold the test root key or
# a canary plaintext (test values starting with CANARY; the tests keep
# them out of statements that fail, whose text PostgreSQL itself logs).
echo "== server logs"
test_key=$(sed -n "s/^gdprcrm.key_command = 'echo \([0-9a-f]*\)'/\1/p" test/regress.conf)
logs=$(ls log/postmaster.log output_iso/log/postmaster.log 2>/dev/null)
if [ -z "$test_key" ] || [ -z "$logs" ]; then
    echo "could not read the test key from test/regress.conf or find the server logs"
    failed=$((failed + 1))
else
    for secret in "$test_key" CANARY; do
        if grep -qF "$secret" $logs; then
            echo "found in a server log: ${secret:0:6}..."
            failed=$((failed + 1))
        else
            passed=$((passed + 1))
        fi
    done
    echo "no root key and no canary plaintext in:" $logs
fi

echo "(logs in $work)"
finish
