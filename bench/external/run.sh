#!/usr/bin/env bash
# The guard's cost as an outside load generator sees it: wrk against examples/tools/bench_server.rs
# (three routes on one axum server: unguarded, guarded, and a hand-written from_fn + reqwest
# check, the library's fake upstream answering lookups), each pair of sides in alternating rounds,
# and the ratios printed. Not in CI (about two minutes, and timed); see BENCHMARKS.md.
#
#   bash bench/external/run.sh                          # 3 alternating rounds of 4 s per side
#   ROUNDS=5 DURATION=8 bash bench/external/run.sh
#   WORKERS=1 bash bench/external/run.sh                # the server's tokio worker count
#   FROM_FN_TIMEOUT=0 bash bench/external/run.sh        # the hand-written check without timeout
#
# Each figure: req/s of the first side over the second, from the sums over the rounds (so a slow
# spell of this shared machine hits both sides alike), plus the per-round ratios for the spread.
# The answers that were not 2xx are counted per side: all of the refusals on the guarded side
# (409), none anywhere else.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-4}"
THREADS="${THREADS:-1}"
PORT="${PORT:-18090}"
WORKERS="${WORKERS:-}"
FROM_FN_TIMEOUT="${FROM_FN_TIMEOUT:-5}"

source bench/external/common.sh wrk

args=(--listen "127.0.0.1:$PORT" --from-fn-timeout "$FROM_FN_TIMEOUT")
[[ -n "$WORKERS" ]] && args+=(--workers "$WORKERS")
"$server" "${args[@]}" >"$work/server.log" 2>&1 &
server_pid=$!
wait_listening 10
base="http://127.0.0.1:$PORT"

# A downgrade for site 1003 (it holds Professional) in a 1 KiB urlencoded form.
cat >"$work/refused_1k.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
local body = "siteurl=1003&plan=premium&local_user=admin&onboarding=1&note="
wrk.body = body .. string.rep("n", 1024 - #body)
LUA
# The same downgrade as the partner tooling sends it: a 4 KiB multipart form, content type set
# by hand (`multipart/form-data;; boundary=`), with a key nobody checks.
cat >"$work/refused_multipart.lua" <<'LUA'
local boundary = "------------------------d74496d66958873e"
local body = ""
for _, field in ipairs({{"siteurl", "1003"}, {"plan", "premium"}, {"local_user", "admin"},
                        {"force_register", "1"}, {"onboarding", "1"}}) do
    body = body .. "--" .. boundary .. "\r\nContent-Disposition: form-data; name=\"" .. field[1]
        .. "\"\r\n\r\n" .. field[2] .. "\r\n"
end
body = body .. "--" .. boundary .. "\r\nContent-Disposition: form-data; name=\"ssh_private_key\"\r\n\r\n"
local closing = "\r\n--" .. boundary .. "--\r\n"
body = body .. string.rep("k", 4096 - #body - #closing) .. closing
wrk.method = "POST"
wrk.headers["Content-Type"] = "multipart/form-data;; boundary=" .. boundary
wrk.body = body
LUA
# Upgrades spread over the 1000 free sites (one lookup each): the script both benchmarks share.
cp bench/external/allowed.lua "$work/allowed.lua"

# Prints "req/s non_2xx" for one wrk run.
measure() {
    local path="$1" script="$2" connections="$3" out
    out="$(wrk -t"$THREADS" -c"$connections" -d"${DURATION}s" -s "$work/$script.lua" "$base$path")"
    awk '/^Requests\/sec:/ {rps = $2} /Non-2xx or 3xx responses:/ {other = $NF}
         END {print rps, other + 0}' <<<"$out"
}

# One figure: ROUNDS alternating rounds of `first` and `second` (which starts alternates too).
# Prints "name ratio first_rps second_rps per-round-ratios".
figure() {
    local name="$1" script="$2" connections="$3" first="$4" second="$5"
    local sum1=0 sum2=0 rounds="" r1 r2 o o2 other1=0 other2=0
    # Warm-up: connections, the guard's cache, the fake's pool.
    measure "$first" "$script" "$connections" >/dev/null
    measure "$second" "$script" "$connections" >/dev/null
    for round in $(seq "$ROUNDS"); do
        if ((round % 2)); then
            read -r r1 o < <(measure "$first" "$script" "$connections")
            read -r r2 o2 < <(measure "$second" "$script" "$connections")
        else
            read -r r2 o2 < <(measure "$second" "$script" "$connections")
            read -r r1 o < <(measure "$first" "$script" "$connections")
        fi
        other1=$((other1 + o)); other2=$((other2 + o2))
        sum1="$(awk -v a="$sum1" -v b="$r1" 'BEGIN {print a + b}')"
        sum2="$(awk -v a="$sum2" -v b="$r2" 'BEGIN {print a + b}')"
        rounds+="$(awk -v a="$r1" -v b="$r2" 'BEGIN {printf "%.3f ", a / b}')"
        echo "  $name round $round: $first $r1 req/s (non-2xx $o), $second $r2 req/s (non-2xx $o2)" >&2
    done
    awk -v n="$name" -v a="$sum1" -v b="$sum2" -v k="$ROUNDS" -v r="$rounds" -v x="$other1/$other2" \
        'BEGIN {printf "%s %.3f %.0f %.0f %s %s\n", n, a / b, a / k, b / k, x, r}'
}

results=()
results+=("$(figure refused_1k_ratio refused_1k 64 /guarded /unguarded)")
results+=("$(figure refused_multipart_ratio refused_multipart 64 /guarded /unguarded)")
results+=("$(figure allowed_ratio_from_fn_c16 allowed 16 /guarded /from_fn)")
results+=("$(figure allowed_ratio_from_fn_c64 allowed 64 /guarded /from_fn)")

cat <<TABLE

Run: $(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD), $(nproc) cores, wrk -t$THREADS -d${DURATION}s, $ROUNDS alternating rounds, server workers: ${WORKERS:-tokio default}, from_fn's reqwest timeout: ${FROM_FN_TIMEOUT} s (0: none).

| figure | target | ratio | guarded req/s | other side req/s | answers not 2xx (guarded/other) | per round |
|---|---|---|---|---|---|---|
TABLE
for line in "${results[@]}"; do
    read -r name ratio a b other per <<<"$line"
    echo "| $name | >= 0.95 | **$ratio** | $a | $b | $other | $per |"
done
