# Shared by test/run.sh and test/demo/demo.sh: build, install, and run
# commands as an unprivileged user (PostgreSQL refuses to run as root).

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export PG_CONFIG

# The user that runs servers: the current one, or postgres when root.
if [ "$(id -u)" -eq 0 ]; then
    run_user=postgres
else
    run_user=$(id -un)
fi

as_run_user() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u "$run_user" -- env PATH="$PATH" PG_CONFIG="$PG_CONFIG" "$@"
    else
        "$@"
    fi
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Build with warnings as errors and install into the PostgreSQL found by
# PG_CONFIG.
build_and_install() {
    make -s clean >/dev/null &&
    make -s WERROR=-Werror &&
    as_root make -s install PG_CONFIG="$PG_CONFIG" >/dev/null
}

# Copy the source tree (without .git) to a new directory the run user owns.
copy_tree_for_run_user() {
    local dest=$1
    mkdir -p "$dest"
    tar --exclude=./.git -cf - . | tar -xf - -C "$dest"
    if [ "$(id -u)" -eq 0 ]; then chown -R "$run_user" "$dest"; fi
}

# init_private_instance DIR PORT [SETTING...]: a new data directory DIR/data,
# owned by the run user, reachable only through a Unix socket in DIR (no
# TCP listener, so it cannot clash with another server), with gdprcrm
# preloaded and each SETTING appended to postgresql.conf.  Start it with
# pg_ctl -D DIR/data.
init_private_instance() {
    local dir=$1 port=$2
    shift 2
    if [ "$(id -u)" -eq 0 ]; then chown "$run_user" "$dir"; fi
    as_run_user "$("$PG_CONFIG" --bindir)/initdb" -D "$dir/data" -A trust -U postgres \
        -E UTF8 --locale=C >/dev/null
    {
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$dir'"
        echo "port = $port"
        echo "shared_preload_libraries = 'gdprcrm'"
        printf '%s\n' "$@"
    } >> "$dir/data/postgresql.conf"
}
