#!/usr/bin/env bash
# What one allowed request costs the bench server, guarded against the hand-written check, as
# callgrind's cache simulator counts it: instructions, first-level instruction and data misses,
# last-level misses, per request. Unlike req/s on this shared machine, these figures repeat from
# run to run, so a change to the allowed path can be told from the noise (see BENCHMARKS.md).
# Not in CI (about three minutes).
#
#   bash bench/external/callgrind.sh                # 4 connections, 15 s per side
#   CONNECTIONS=1 DURATION=20 bash bench/external/callgrind.sh
#   TOP=30 bash bench/external/callgrind.sh         # and the guard's own functions, by misses
#   LL=524288,8,64 bash bench/external/callgrind.sh # the last level simulated as a 512 KiB L2
#
# The server runs under valgrind (one thread at a time, about fifty times slower); wrk drives it
# from outside, first both routes to warm them (connections, the names of the free sites), then
# each route alone with instrumentation on. The counts cover every thread of the server, its
# in-process fake upstream included (the same work on both sides).
set -euo pipefail
cd "$(dirname "$0")/../.."

CONNECTIONS="${CONNECTIONS:-4}"
DURATION="${DURATION:-15}"
PORT="${PORT:-18095}"
TOP="${TOP:-0}"
LL="${LL:-}"

source bench/external/common.sh wrk valgrind

cache=(--cache-sim=yes)
[[ -n "$LL" ]] && cache+=("--LL=$LL")
valgrind --tool=callgrind --instr-atstart=no "${cache[@]}" \
    --callgrind-out-file="$work/callgrind.%p" \
    "$server" --listen "127.0.0.1:$PORT" >"$work/server.log" 2>&1 &
server_pid=$!
wait_listening 60

# Upgrades spread over the 1000 free sites (one lookup each): the script both benchmarks share.
cp bench/external/allowed.lua "$work/allowed.lua"
drive() {
    wrk -t1 -c"$CONNECTIONS" -d"$1" -s "$work/allowed.lua" "http://127.0.0.1:$PORT$2" |
        awk '/requests in/ {print $1}'
}

for route in /guarded /from_fn /guarded /from_fn; do
    drive 5s "$route" >/dev/null
done
for route in guarded from_fn; do
    callgrind_control --zero "$server_pid" >/dev/null
    callgrind_control --instr=on "$server_pid" >/dev/null
    requests="$(drive "${DURATION}s" "/$route")"
    callgrind_control --instr=off "$server_pid" >/dev/null
    callgrind_control --dump="$route" "$server_pid" >/dev/null
    echo "$route $requests" >>"$work/requests"
done

python3 - "$work" "$TOP" "$CONNECTIONS" <<'PY'
import glob, re, subprocess, sys

work, top, connections = sys.argv[1], int(sys.argv[2]), sys.argv[3]
requests = dict(line.split() for line in open(f"{work}/requests"))
dumps = sorted(glob.glob(f"{work}/callgrind.*.*"), key=lambda f: int(f.rsplit(".", 1)[1]))
events = "Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw".split()
per = {}
for route, dump in zip(("guarded", "from_fn"), dumps):
    totals = next(l for l in open(dump) if l.startswith("totals:")).split()[1:]
    n = int(requests[route])
    per[route] = {e: int(v) / n for e, v in zip(events, totals)}
    per[route]["requests"] = n
    per[route]["dump"] = dump

g, f = per["guarded"], per["from_fn"]
rows = [
    ("instructions", "Ir"),
    ("L1 instruction misses", "I1mr"),
    ("L1 data misses", ("D1mr", "D1mw")),
    ("last-level misses", ("ILmr", "DLmr", "DLmw")),
]
print(f"\nPer allowed request, {connections} connections (guarded: {g['requests']:.0f} "
      f"requests measured, from_fn: {f['requests']:.0f}):\n")
print("| per request | guarded | from_fn | guarded - from_fn |")
print("|---|---|---|---|")
for name, keys in rows:
    keys = (keys,) if isinstance(keys, str) else keys
    a, b = sum(g[k] for k in keys), sum(f[k] for k in keys)
    print(f"| {name} | {a:,.0f} | {b:,.0f} | {a - b:+,.0f} |")

if top:
    out = subprocess.run(
        ["callgrind_annotate", "--threshold=100", "--show=Ir,I1mr,D1mr,D1mw", "--sort=I1mr",
         g["dump"]], capture_output=True, text=True).stdout
    print(f"\nThe guard's own functions on the guarded side, by L1 instruction misses, per request:")
    print("| Ir | I1mr | D1mr | D1mw | function |")
    print("|---|---|---|---|---|")
    shown = 0
    for line in out.splitlines():
        if "upgrade_guard::" not in line or "upgrade_guard::fake" in line or "???:" not in line:
            continue
        counts, name = line.split("???:", 1)
        values = [int(v.replace(",", "")) if v != "." else 0
                  for v in re.findall(r"([\d,]+|(?<=\s)\.(?=\s))(?:\s+\([^)]*\))?", counts)][:4]
        n = g["requests"]
        print("| " + " | ".join(f"{v / n:,.1f}" for v in values) + f" | `{name.split(' [')[0][:100]}` |")
        shown += 1
        if shown == top:
            break
PY
