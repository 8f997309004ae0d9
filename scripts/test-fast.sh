#!/usr/bin/env bash
# The fast tier of the tests (docs/TESTING.md, "Test tiers"): every test of the workspace but the
# slow tier's test targets, listed below. `cargo test --workspace` (CI) runs both tiers.
#
#   scripts/test-fast.sh                     the fast tier
#   scripts/test-fast.sh --slow              the slow tier alone
#   scripts/test-fast.sh --locked -- --nocapture   arguments go to every `cargo test`
#
# A new test target is in the fast tier unless it is added to SLOW.
set -euo pipefail
cd "$(dirname "$0")/.."

# package/test-target
SLOW=(
    # The `cpns` binary run as separate server, PN GW and PNE processes (tests/common).
    cpns/attacks cpns/bench cpns/control_api cpns/crash cpns/lifecycle cpns/processes cpns/status
    # docs/wire.cddl checked against a sample of every message: minutes in a debug build.
    cpns-wire/cddl
)

slow=false
if [[ ${1:-} == --slow ]]; then
    slow=true
    shift
fi

if $slow; then
    for s in "${SLOW[@]}"; do
        cargo test -p "${s%%/*}" --test "${s#*/}" "$@"
    done
    exit 0
fi

# The packages with slow targets.
pkgs=()
for s in "${SLOW[@]}"; do
    [[ " ${pkgs[*]} " == *" ${s%%/*} "* ]] || pkgs+=("${s%%/*}")
done

# Every other package whole, doc tests included.
excludes=()
for p in "${pkgs[@]}"; do
    excludes+=(--exclude "$p")
done
cargo test --workspace "${excludes[@]}" "$@"

# Of those packages: unit tests, doc tests and the integration tests not in SLOW.
for p in "${pkgs[@]}"; do
    targets=(--bins)
    if [[ -f crates/$p/src/lib.rs ]]; then
        targets+=(--lib)
    fi
    for f in crates/"$p"/tests/*.rs crates/"$p"/tests/*/main.rs; do
        [[ -e $f ]] || continue
        name=$(basename "$f" .rs)
        if [[ $name == main ]]; then
            name=$(basename "$(dirname "$f")")
        fi
        [[ " ${SLOW[*]} " == *" $p/$name "* ]] || targets+=(--test "$name")
    done
    cargo test -p "$p" "${targets[@]}" "$@"
    if [[ -f crates/$p/src/lib.rs ]]; then
        cargo test -p "$p" --doc "$@"
    fi
done
