#!/bin/sh
# libdss.so speaks through the system libpq, and only through what that
# libpq has:
# * ldd resolves libpq.so.5 to the system copy (not one bundled inside);
# * every PQ* function libdss.so imports is defined by that libpq.so.5
#   (pq-sys declares PostgreSQL 17/18 functions, e.g. PQcancelCreate, that
#   would build but fail to load against bookworm's libpq 15);
# * libdss.so defines no PQ* symbol of its own (no second libpq inside);
# * dss.pc names libpq for static links (Requires.private).
#   check_libpq.sh NM LIBDSS.so DSS.pc
set -eu
nm=$1 lib=$2 pc=$3
status=0
libpq=$(ldd "$lib" | awk '$1 == "libpq.so.5" { print $3 }')
if [ -z "$libpq" ] || [ ! -f "$libpq" ]; then
    echo "FAIL: ldd $lib does not resolve libpq.so.5:"; ldd "$lib"; exit 1
fi
echo "libpq: $libpq"
case $libpq in
    /usr/lib/*|/lib/*) ;;
    *) echo "FAIL: libpq.so.5 is not the system's: $libpq"; status=1 ;;
esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$nm" -D --undefined-only "$lib" | awk '{ print $NF }' | sed 's/@.*//' | grep '^PQ' | sort -u >"$tmp/imported"
"$nm" -D --defined-only "$libpq" | awk '{ print $NF }' | sed 's/@.*//' | grep '^PQ' | sort -u >"$tmp/provided"
[ -s "$tmp/imported" ] || { echo "FAIL: libdss.so imports no PQ* function"; exit 1; }
missing=$(comm -23 "$tmp/imported" "$tmp/provided")
if [ -n "$missing" ]; then
    echo "FAIL: imported by libdss.so but not in $libpq:"; echo "$missing" | sed 's/^/  /'; status=1
fi
own=$("$nm" -D --defined-only "$lib" | awk '{ print $NF }' | grep '^PQ' || true)
if [ -n "$own" ]; then
    echo "FAIL: libdss.so defines libpq symbols itself:"; echo "$own" | sed 's/^/  /'; status=1
fi
grep -q '^Requires.private:.*libpq' "$pc" || { echo "FAIL: $pc has no Requires.private: libpq"; status=1; }
[ $status = 0 ] && echo "OK: $(wc -l <"$tmp/imported") PQ* functions imported, all in $libpq"
exit $status
