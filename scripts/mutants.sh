#!/usr/bin/env bash
# Mutation testing of the leaf crates (docs/TESTING.md): installs cargo-mutants if it is missing,
# then runs it on cpns-wire, cpns-crypto and cpns-store, one crate after another, one mutant at a
# time. Each crate's results go to $MUTANTS_OUT/<crate>/mutants.out (caught.txt, missed.txt,
# unviable.txt, timeout.txt); the script prints each crate's summary line and its missed
# mutants. It is a measurement, not a gate: a few missed mutants are known to be equivalent
# (docs/TESTING.md lists them), so it fails only when cargo-mutants itself cannot run (for
# example when the unmutated tests fail).
#
# Usage: scripts/mutants.sh [crate...]     (default: the three leaf crates; cpns-proto on request,
#                                          e.g. scripts/mutants.sh cpns-proto)
#
# Slow (tens of minutes on two cores), so it is not part of .ci/run. The `mutants` cargo profile
# (Cargo.toml) and .cargo/mutants.toml keep each mutant's build and test short.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${MUTANTS_OUT:-target/mutants-out}"
CRATES=("$@")
[ ${#CRATES[@]} -eq 0 ] && CRATES=(cpns-wire cpns-crypto cpns-store)

# The version docs/TESTING.md's figures were taken with: another one may generate other mutants.
command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked --version 27.1.0

status=0
for crate in "${CRATES[@]}"; do
    mkdir -p "$OUT/$crate"
    # Exit codes: 0 all caught, 2 some missed, 3 some timed out; anything else is a failure to run.
    cargo mutants -p "$crate" --timeout 120 --jobs 1 -o "$OUT/$crate"
    rc=$?
    case "$rc" in 0 | 2 | 3) ;; *) status=1 ;; esac
    echo "$crate: exit $rc; results in $OUT/$crate/mutants.out; missed:"
    sed 's/^/    /' "$OUT/$crate/mutants.out/missed.txt" 2>/dev/null
done
exit "$status"
