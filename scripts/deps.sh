#!/bin/sh
# Installs what the build and the tests need, from Debian's packages, when it
# is missing. As root it runs apt-get; otherwise it says what to install.
set -eu
need=""
have() { command -v "$1" >/dev/null 2>&1; }
have cc || need="$need gcc"
have make || need="$need make"
have cmake || need="$need cmake"
have pkg-config || need="$need pkg-config"
have psql || need="$need postgresql-client"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$need postgresql"
[ -f /usr/include/cmocka.h ] || need="$need libcmocka-dev"
# The library speaks through the system libpq (libpq5 at run time).
[ -f /usr/include/postgresql/libpq-fe.h ] || need="$need libpq-dev"
have openssl || need="$need openssl"   # the TLS tests make their own CA
have runuser || need="$need util-linux"
have valgrind || need="$need valgrind"   # scripts/test-sanitize.sh (memcheck)
have cargo || { echo "deps: cargo (Rust) is required: https://rustup.rs" >&2; exit 1; }
if [ -n "$need" ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "deps: installing$need"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # shellcheck disable=SC2086
        apt-get install -y -qq $need >/dev/null
    else
        echo "deps: missing Debian packages:$need (sudo apt-get install$need)" >&2
        exit 1
    fi
fi
