#!/usr/bin/env bash
# Runs the shell scenarios of a patchelf source checkout against `storepatch elf` (and, for
# comparison, against a reference patchelf binary), and prints one line per scenario.
#
# Usage: run.sh CHECKOUT STOREPATCH [REFERENCE_PATCHELF]
#   CHECKOUT            a patchelf checkout, configured, with its test programs built:
#                       ./bootstrap.sh && ./configure && make -C tests check TESTS=
#   STOREPATCH          the storepatch binary (copied as CHECKOUT/src/patchelf, so that it
#                       dispatches on its name)
#   REFERENCE_PATCHELF  optional: an upstream patchelf binary to run the same scenarios with
#
# Fetches nothing. Scenario names are read from CHECKOUT/tests/Makefile.am (src_TESTS).
set -uo pipefail
checkout=$(readlink -f "$1")
storepatch=$(readlink -f "$2")
reference=${3:+$(readlink -f "$3")}
tests="$checkout/tests"
scenarios=$(sed -n '/^src_TESTS/,/^$/p' "$tests/Makefile.am" | tr -s ' \\\t' '\n' | grep '\.sh$' | sort -u)
export srcdir=. PATCHELF_DEBUG=1 STRIP=strip NM=nm OBJDUMP=objdump READELF=readelf OBJCOPY=objcopy STRINGS=strings

run_with() { # binary scenario label -> pass, FAIL or skip (exit status 77, as automake)
  install -m 755 "$1" "$checkout/src/patchelf"
  (cd "$tests" && timeout 300 bash "./$2" >"$log_dir/$3-$2.log" 2>&1)
  case $? in 0) echo pass ;; 77) echo skip ;; *) echo FAIL ;; esac
}

log_dir=$(mktemp -d)
saved=""
if [ -e "$checkout/src/patchelf" ]; then
  saved="$log_dir/patchelf.saved"
  cp -p "$checkout/src/patchelf" "$saved"
fi
passed=0 failed=0 differ=0
printf '%-45s %-10s %s\n' scenario storepatch reference
for scenario in $scenarios; do
  [ -f "$tests/$scenario" ] || continue
  ours=$(run_with "$storepatch" "$scenario" storepatch)
  case $ours in pass) passed=$((passed + 1)) ;; FAIL) failed=$((failed + 1)) ;; esac
  theirs=-
  if [ -n "$reference" ]; then
    theirs=$(run_with "$reference" "$scenario" reference)
    [ "$ours" = "$theirs" ] || differ=$((differ + 1))
  fi
  printf '%-45s %-10s %s\n' "$scenario" "$ours" "$theirs"
done
if [ -n "$saved" ]; then cp -p "$saved" "$checkout/src/patchelf"; else rm -f "$checkout/src/patchelf"; fi
echo "storepatch: $passed passed, $failed failed; differing from the reference: $differ; logs in $log_dir"
