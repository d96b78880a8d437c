#!/usr/bin/env bash
# Passthrough GET through nginx `proxy_pass` and through each binary given, all in front of the
# same upstream, in rounds whose order rotates; per side and round: req/s, p99, CPU per request
# (user + system time from /proc, µs), context switches per request, and user µs alone. For
# comparing two builds of the proxy in the same minutes (a before and an after), or the proxy
# against the floor under it (proxy/bench/floor), when the machine is too shared for run.sh's
# throughput ratio alone to tell a few percent.
#
#   cp "$CARGO_TARGET_DIR/release/upgrade-guard-proxy" /tmp/before   # then build the after
#   bash proxy/bench/ab.sh /tmp/before "$CARGO_TARGET_DIR/release/upgrade-guard-proxy"
#   (cd proxy/bench/floor && cargo build --release) # the floors take the proxy's flags
#   ROUNDS=8 DURATION=5 bash proxy/bench/ab.sh BINARY...
#
# Each binary gets `--listen --admin --upstream --token --workers` as upgrade-guard-proxy takes
# them; WORKERS threads each (default 1), nginx as many worker processes.
set -euo pipefail
(($#)) || { echo "usage: $0 BINARY..." >&2; exit 2; }
bins=("$@")
ROUNDS="${ROUNDS:-6}"; DURATION="${DURATION:-5}"; CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"; WORKERS="${WORKERS:-1}"
UP=18292; NG=18291
# shellcheck source=nginx.sh
source "$(dirname "${BASH_SOURCE[0]}")/nginx.sh"
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    stop_nginx "$work"
    rm -rf "$work"
}
trap cleanup EXIT
start_nginx "$work" "$UP" "$NG" "$WORKERS"
names=(nginx); ports=($NG); sides=()
for i in "${!bins[@]}"; do
    port=$((18300 + i))
    RUST_LOG=warn "${bins[$i]}" --listen "127.0.0.1:$port" --admin "127.0.0.1:$((19300 + i))" \
        --upstream "http://127.0.0.1:$UP" --token bench-token --workers "$WORKERS" &
    pids+=($!)
    names+=("$i:$(basename "${bins[$i]}")"); ports+=("$port")
done
sleep 1
# nginx's figures are its (first) worker process's.
sides=("$(pgrep -P "$(cat "$work/nginx.pid")" | head -1)" "${pids[@]}")
tck="$(getconf CLK_TCK)"
cpu() { awk '{print $14, $15}' "/proc/$1/stat"; }
switches() { awk '/ctxt_switches/ {s += $2} END {print s}' "/proc/$1/status"; }
measure() { # name port pid
    local u0 s0 c0 u1 s1 c1 out
    read -r u0 s0 < <(cpu "$3"); c0="$(switches "$3")"
    out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$2/rest/v1.4/jpphp/1002/status")"
    read -r u1 s1 < <(cpu "$3"); c1="$(switches "$3")"
    awk -v name="$1" -v t="$tck" -v u0="$u0" -v s0="$s0" -v u1="$u1" -v s1="$s1" -v c0="$c0" -v c1="$c1" \
        -v rps="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")" \
        -v n="$(awk '/requests in/ {print $1}' <<<"$out")" \
        -v p99="$(awk '$1 == "99%" {print $2}' <<<"$out")" \
        'BEGIN { printf "%-28s %8.0f req/s  p99 %-8s %5.1f us/req (user %4.1f)  %.2f switches/req\n",
                 name, rps, p99, (u1 + s1 - u0 - s0) / t * 1e6 / n, (u1 - u0) / t * 1e6 / n, (c1 - c0) / n }'
}
for i in "${!names[@]}"; do wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "http://127.0.0.1:${ports[$i]}/" >/dev/null; done
echo "load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%H:%M) UTC"
n=${#names[@]}
for round in $(seq "$ROUNDS"); do
    for k in $(seq 0 $((n - 1))); do
        i=$(((k + round) % n))
        echo "round $round $(measure "${names[$i]}" "${ports[$i]}" "${sides[$i]}")"
    done
done
echo "load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%H:%M) UTC"
