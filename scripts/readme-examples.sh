#!/usr/bin/env bash
# Runs the commands of the README's "Running the parts as separate processes" section as written,
# so the README cannot drift from the CLI.
#
# It builds `cpns` (dev profile, shared with `cargo test`; CPNS_BIN=/path/to/cpns skips the
# build), puts it on PATH and works in a new temporary directory. From the section it takes:
#   - ```json file=NAME blocks: written to NAME first;
#   - ```sh blocks: every command, continuation lines joined, run in order with bash.
# `cpns server`, `cpns gateway` and `cpns pne --await-invitation` keep running, so they are
# started in the background and the script waits for their ready line before going on; a waiting
# PNE must have ended successfully once the next command has. Every other command must succeed
# within a minute. At the end the event lines each command printed are checked, and every
# process still running is stopped. Fails (non-zero, with the outputs) on any error.
#
# The README's commands use the fixed ports 7400 and 7401; they must be free.
set -euo pipefail

SECTION='## Running the parts as separate processes'
WAIT_S=30

root="$(cd "$(dirname "$0")/.." && pwd)"
readme="$root/README.md"

fail() {
    echo "readme-examples: $*" >&2
    exit 1
}

if [[ -z "${CPNS_BIN:-}" ]]; then
    (cd "$root" && cargo build -p cpns --locked --quiet)
    target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps |
        grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)"
    CPNS_BIN="$target_dir/debug/cpns"
fi
[[ -x "$CPNS_BIN" ]] || fail "no cpns binary at $CPNS_BIN"
bindir="$(mktemp -d)"
ln -s "$CPNS_BIN" "$bindir/cpns"
export PATH="$bindir:$PATH"
export CPNS_LOG="${CPNS_LOG:-info}"

work="$(mktemp -d)"
pids=()
names=()
status=1

cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ $status -ne 0 ]]; then
        echo "readme-examples: FAILED; outputs in $work:" >&2
        for f in "$work"/*.out "$work"/*.err; do
            [[ -s "$f" ]] || continue
            echo "----- ${f##*/}" >&2
            tail -n 40 "$f" >&2
        done
    else
        rm -rf "$work"
    fi
    rm -rf "$bindir"
}
trap cleanup EXIT

for port in 7400 7401; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        fail "port $port is in use; the README's commands need it"
    fi
done

# The section's fenced blocks, as "@@begin <info>" ... "@@end".
blocks="$(awk -v section="$SECTION" '
    $0 == section { in_section = 1; next }
    in_section && /^## / { exit }
    in_section && /^```/ {
        if (in_block) { in_block = 0; print "@@end" }
        else { in_block = 1; print "@@begin " substr($0, 4) }
        next
    }
    in_section && in_block { print }
' "$readme")"
[[ -n "$blocks" ]] || fail "no section \"$SECTION\" with code blocks in $readme"

# Files first, then commands.
commands=()
mode=""
file=""
pending=""
while IFS= read -r line; do
    case "$line" in
        "@@begin sh")
            mode=sh
            continue
            ;;
        "@@begin json file="*)
            mode=file
            file="${line#@@begin json file=}"
            : >"$work/$file"
            continue
            ;;
        "@@begin "*)
            mode=skip
            continue
            ;;
        "@@end")
            [[ -z "$pending" ]] || fail "a command ends in a continuation: $pending"
            mode=""
            continue
            ;;
    esac
    case "$mode" in
        file) printf '%s\n' "$line" >>"$work/$file" ;;
        sh)
            if [[ "$line" == *\\ ]]; then
                pending+="${line%\\} "
                continue
            fi
            line="$pending$line"
            pending=""
            code="${line%%#*}"
            [[ -n "${code//[[:space:]]/}" ]] && commands+=("$line")
            ;;
    esac
done <<<"$blocks"
((${#commands[@]} > 0)) || fail "no commands in the section"

# What a command must print (extended regexes, one per line), by what it is.
expectations() {
    local code="${1%%#*}"
    case "$code" in
        "cpns init "*) echo '^initialised srv$' ;;
        "cpns enroll "*) echo '^enrolled (PN GW|PNE) [a-z-]+ of user alice; credential in [a-z-]+\.cred\.json$' ;;
        "cpns server "*)
            echo '^[0-9:]{8} listening  addr=127\.0\.0\.1:7400$'
            echo '^[0-9:]{8} gateway ready  gateway=home-gw$'
            echo '^[0-9:]{8} pn registered  pn=[0-9a-f]{4}…[0-9a-f]{2} members=(phone,watch|watch,phone)$'
            echo '^[0-9:]{8} pne registered  pne_id=watch cpns_id=[^ ]+$'
            ;;
        "cpns gateway "*)
            echo '^[0-9:]{8} pan listening  addr=127\.0\.0\.1:7401$'
            echo '^[0-9:]{8} control listening  path=home-gw\.db\.sock$'
            echo '^[0-9:]{8} wan ready$'
            echo '^[0-9:]{8} pne discovered  pne=watch link=[0-9]+$'
            echo '^[0-9:]{8} pn established  pn=[0-9a-f]{4}…[0-9a-f]{2} gateway=home-gw members=(phone,watch|watch,phone) initiator=phone$'
            echo '^[0-9:]{8} pne registered  pne=watch cpns_id=[^ ]+$'
            ;;
        "cpns pne "*--await-invitation*)
            echo '^[0-9:]{8} discovered  gateway=home-gw zone_support=no pns=none$'
            echo '^[0-9:]{8} pn joined  pn=[0-9a-f]{4}…[0-9a-f]{2} gateway=home-gw members=(phone,watch|watch,phone) initiator=no$'
            ;;
        "cpns pne "*--setup*)
            echo '^[0-9:]{8} pan authenticated  pn=[0-9a-f]{4}…[0-9a-f]{2} suite=(aes-256-gcm|chacha20-poly1305)$'
            echo '^[0-9:]{8} pn joined  pn=[0-9a-f]{4}…[0-9a-f]{2} gateway=home-gw members=(phone,watch|watch,phone) initiator=yes$'
            ;;
        "cpns pne "*--echo*)
            echo '^[0-9:]{8} secure answer  service=cpns\.echo payload=hello$'
            ;;
        "cpns pne "*--register*)
            echo '^[0-9:]{8} registered  cpns_id=[^ ]+ pn=[0-9a-f]{4}…[0-9a-f]{2} lifetime_s=[0-9]+$'
            ;;
        "cpns inventory --data-dir "*)
            echo '^PN [0-9a-f]{32}  gateway home-gw  owner alice  active$'
            echo '^  PNE phone +phone +authenticated, initiator  cpns-id -$'
            echo '^  PNE watch +watch +authenticated  cpns-id [^ ]{2,}$'
            ;;
        "cpns inventory --local "*)
            echo '^PN [0-9a-f]{32}  gateway home-gw$'
            echo '^  PNE phone +LocalEUKey$'
            # Without a UI, the watch holds a LocalEUKey too (docs/security.md §4.2).
            echo '^  PNE watch +LocalEUKey$'
            ;;
        "cpns pn show "*)
            echo '^PN [0-9a-f]{32} at home-gw: (phone, watch|watch, phone)$'
            ;;
        "cpns status show --data-dir "*)
            echo '^home-gw: online since [0-9:]{8}Z$'
            echo '^phone: (online|offline) since [0-9:]{8}Z'
            echo '^watch: (online|offline) since [0-9:]{8}Z'
            ;;
        "cpns caps show home-gw --data-dir "*)
            echo '^home-gw: home-hub, mains, on wlan,ethernet,bluetooth, software cpns/[0-9.]+, PN GW capable$'
            ;;
        *) return 1 ;;
    esac
}
for cmd in "${commands[@]}"; do
    expectations "$cmd" >/dev/null || fail "the script has no expectations for the README command: $cmd"
done

# Waits until $1 holds a line matching $2, or the process $3 has ended.
wait_line() {
    local out="$1" re="$2" pid="$3" i
    for ((i = 0; i < WAIT_S * 10; i++)); do
        grep -Eq -- "$re" "$out" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    grep -Eq -- "$re" "$out" && return 0
    if kill -0 "$pid" 2>/dev/null; then
        fail "${out##*/}: no line matching $re within ${WAIT_S} s"
    fi
    fail "${out##*/}: the process ended without a line matching $re"
}

# Waits for the background PNEs (they end once they joined) and checks they succeeded.
finish_waiting_pnes() {
    local i
    for i in "${!pids[@]}"; do
        [[ "${names[$i]}" == *--await-invitation* ]] || continue
        local pid="${pids[$i]}" t
        for ((t = 0; t < WAIT_S * 10; t++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && fail "did not end: ${names[$i]}"
        wait "$pid" || fail "failed: ${names[$i]}"
        unset "pids[$i]" "names[$i]"
    done
}

cd "$work"
outs=()
n=0
for cmd in "${commands[@]}"; do
    n=$((n + 1))
    out="$work/$n.out"
    outs+=("$out")
    code="${cmd%%#*}"
    echo "readme-examples: \$ $cmd" >&2
    case "$code" in
        "cpns server "* | "cpns gateway "* | "cpns pne "*--await-invitation*)
            bash -c "exec $cmd" >"$out" 2>"$work/$n.err" &
            pid=$!
            pids+=("$pid")
            names+=("$cmd")
            # Ready: listening, connected to the server, or known to the PN GW.
            case "$code" in
                "cpns server "*) wait_line "$out" ' listening  addr=' "$pid" ;;
                "cpns gateway "*) wait_line "$out" ' wan ready$' "$pid" ;;
                *) wait_line "$out" ' discovered  gateway=' "$pid" ;;
            esac
            kill -0 "$pid" 2>/dev/null || fail "ended early: $cmd"
            ;;
        *)
            timeout 60 bash -c "$cmd" >"$out" 2>"$work/$n.err" || fail "failed: $cmd"
            finish_waiting_pnes
            ;;
    esac
done

# Give the long-running processes a moment to print what followed the last command.
sleep 0.5
n=0
for cmd in "${commands[@]}"; do
    n=$((n + 1))
    res="$(expectations "$cmd")"
    while IFS= read -r re; do
        grep -Eq -- "$re" "$work/$n.out" || fail "\`$cmd\` printed no line matching $re"
    done <<<"$res"
    # Never a Rust Debug dump.
    if grep -Eq '[A-Z][A-Za-z]+ \{ |[A-Z][a-z]+[A-Z][A-Za-z]*\(' "$work/$n.out"; then
        fail "\`$cmd\` printed what looks like Rust Debug output"
    fi
done
status=0
echo "readme-examples: all ${#commands[@]} commands ran as written and printed the expected events" >&2
