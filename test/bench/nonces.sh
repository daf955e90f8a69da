#!/bin/bash
# Build test/bench/nonce_rate against src/csprng.c and run it.
#
#   bash test/bench/nonces.sh [count]
#
# Prints nonces per second for getrandom(2), libsodium's randombytes_buf and
# csprng_fill, then checks that csprng_fill is fork safe.  PG_CONFIG selects
# the PostgreSQL whose server headers csprng.c is compiled against; CC the
# compiler.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../../src" && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
CC=${CC:-cc}

includedir_server=$("$PG_CONFIG" --includedir-server)

"$CC" -O2 -Wall -Wextra -Wmissing-prototypes -Werror -D_GNU_SOURCE \
	-isystem "$includedir_server" -I "$src" \
	-o "$here/nonce_rate" "$here/nonce_rate.c" "$src/csprng.c" \
	-lsodium

exec "$here/nonce_rate" "$@"
