#!/bin/bash
# Build the libFuzzer harness for the envelope decoder and run it.
#
#   bash test/fuzz/run.sh [runs [extra libFuzzer flags...]]
#
# Builds test/fuzz/envelope_fuzzer from src/envelope.c with libFuzzer,
# AddressSanitizer and UndefinedBehaviorSanitizer, then runs it for runs
# executions (default 1000000) on a copy of test/fuzz/corpus in a temporary
# directory, so the committed seed corpus is never modified.  Prints
# libFuzzer's final stats; exits non-zero when the fuzzer found a crash, in
# which case the input is saved as test/fuzz/crash-*.  CC selects the
# compiler (default clang); it must support -fsanitize=fuzzer.  FUZZ_CFLAGS
# is added to the compiler flags.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../../src" && pwd)
CC=${CC:-clang}
runs=${1:-1000000}
shift $(($# > 0 ? 1 : 0))

"$CC" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	-Wall -Wextra -Wmissing-prototypes -Werror ${FUZZ_CFLAGS:-} \
	-I "$src" \
	-o "$here/envelope_fuzzer" "$src/envelope.c" "$here/envelope_fuzzer.c" \
	-lsodium

work=$(mktemp -d /tmp/gdprcrm-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -R "$here/corpus" "$work/corpus"

status=0
(cd "$work" && "$here/envelope_fuzzer" -runs="$runs" -print_final_stats=1 \
	-artifact_prefix="$here/" "$@" corpus) >"$work/log" 2>&1 || status=$?

# The last status line ("#N DONE cov: ... ft: ...") or the crash report.
if [ "$status" -eq 0 ]; then
	grep -E '^#[0-9]+[[:space:]]+DONE' "$work/log" | tail -n 1
	grep -E '^(Done [0-9]+ runs|stat::)' "$work/log"
else
	# from the first report of the failure to the end, else the tail
	if grep -qE 'invariant violated|ERROR: |runtime error' "$work/log"; then
		sed -n -E '/invariant violated|ERROR: |runtime error/,$p' "$work/log"
	else
		tail -n 60 "$work/log"
	fi
	echo "envelope_fuzzer failed with status $status" >&2
fi
exit "$status"
