#!/bin/sh
# Every function exported by libdss.so (nm -D --defined-only, type T) is
# declared in dss.h, and every function declared in dss.h is exported.
#   check_symbols.sh NM LIBDSS.so CC DSS.h
set -eu
nm=$1 lib=$2 cc=$3 header=$4
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$nm" -D --defined-only "$lib" | awk '$2 == "T" { print $3 }' | sort -u >"$tmp/exported"
# Declarations, with comments removed by the preprocessor; system headers
# declare nothing named dss_*.
printf '#include "%s"\n' "$header" | "$cc" -E -P -x c - \
    | tr -s ' \t\n' '   ' | grep -oE '\bdss_[A-Za-z0-9_]+[[:space:]]*\(' \
    | tr -d '( ' | sort -u >"$tmp/declared"

echo "exported by $lib:"; sed 's/^/  /' "$tmp/exported"
echo "declared in $header:"; sed 's/^/  /' "$tmp/declared"
[ -s "$tmp/exported" ] || { echo "FAIL: no exported function found"; exit 1; }
[ -s "$tmp/declared" ] || { echo "FAIL: no declaration found"; exit 1; }
status=0
undeclared=$(comm -23 "$tmp/exported" "$tmp/declared")
missing=$(comm -13 "$tmp/exported" "$tmp/declared")
if [ -n "$undeclared" ]; then
    echo "FAIL: exported but not declared in dss.h:"; echo "$undeclared" | sed 's/^/  /'; status=1
fi
if [ -n "$missing" ]; then
    echo "FAIL: declared in dss.h but not exported:"; echo "$missing" | sed 's/^/  /'; status=1
fi
# Nothing else leaks: no exported data or weak symbols named dss_* either.
others=$("$nm" -D --defined-only "$lib" | awk '$2 != "T" && $3 ~ /^dss_/ { print $2, $3 }')
if [ -n "$others" ]; then
    echo "FAIL: exported non-function dss_* symbols:"; echo "$others" | sed 's/^/  /'; status=1
fi
[ $status = 0 ] && echo "OK: $(wc -l <"$tmp/exported") functions, exported == declared"
exit $status
