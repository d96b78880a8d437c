#!/usr/bin/env bash
# Passthrough throughput and p99 of upgrade-guard-proxy against nginx `proxy_pass`, both in front
# of the same upstream on loopback, in alternating rounds; then the guarded provision route's
# overhead over passthrough. Prints a Markdown table for BENCHMARKS.md.
#
#   bash proxy/bench/run.sh                  # 3 rounds of 10 s per side, 64 connections
#   ROUNDS=5 DURATION=20 CONNECTIONS=128 bash proxy/bench/run.sh
#   WORKERS=2 bash proxy/bench/run.sh        # each proxy's threads (nginx worker processes)
#
# The upstream is an nginx of its own answering from memory (a provision's JSON for any path, an
# upgrade-paths answer for lookups, a public site lookup naming the site's blog ID and URL), so
# both proxies are measured, not the upstream. nginx-the-proxy is a second nginx, with
# keep-alive to the upstream as a partner would configure it: sharing the upstream's worker
# processes would let it hand requests to the upstream without waking another process, which
# no real deployment does. Both proxies get WORKERS threads (default 1: on 2 cores, the other
# core is wrk's and the upstream's; more threads than free cores only take turns with them).
# Both log only warnings (nginx: access_log off).
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
WORKERS="${WORKERS:-1}"
UPSTREAM_PORT="${UPSTREAM_PORT:-18082}"
NGINX_PORT="${NGINX_PORT:-18081}"
PROXY_PORT="${PROXY_PORT:-18080}"
ADMIN_PORT="${ADMIN_PORT:-19090}"

for tool in nginx wrk; do
    if ! command -v "$tool" >/dev/null; then
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx wrk
        break
    fi
done

cargo build --release --bin upgrade-guard-proxy
# shellcheck source=nginx.sh
source proxy/bench/nginx.sh
work="$(mktemp -d)"
cleanup() {
    [[ -n "${proxy_pid:-}" ]] && kill "$proxy_pid" 2>/dev/null && wait "$proxy_pid" 2>/dev/null
    stop_nginx "$work"
    rm -rf "$work"
}
trap cleanup EXIT

start_nginx "$work" "$UPSTREAM_PORT" "$NGINX_PORT" "$WORKERS"

RUST_LOG=warn "${CARGO_TARGET_DIR:-target}/release/upgrade-guard-proxy" \
    --listen "127.0.0.1:$PROXY_PORT" --admin "127.0.0.1:$ADMIN_PORT" \
    --upstream "http://127.0.0.1:$UPSTREAM_PORT" --token bench-token --workers "$WORKERS" &
proxy_pid=$!
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$ADMIN_PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done

# A provision form, urlencoded. Allowed provisions (PLAN=professional) name a site never named
# before (the guard remembers a provision it forwarded for a minute, and the upstream's canned
# answer would still list it: the same provision again is refused), each wrk thread its own; so
# each costs a site lookup, an upgrade-paths lookup and the provision. Refusals (PLAN=personal)
# cycle over 10000 sites, whose refusals the guard then answers from its cache.
cat >"$work/provision.lua" <<'LUA'
local threads = 0
function setup(thread)
    thread:set("tid", threads)
    threads = threads + 1
end
local n = 0
local plan = os.getenv("PLAN") or "professional"
local base = tonumber(os.getenv("SITE_BASE") or "0")
request = function()
    n = n + 1
    local site
    if plan == "professional" then
        site = base + (tid or 0) * 100000000 + n
    else
        site = n % 10000
    end
    local body = "siteurl=https://site" .. site .. ".example.com/&plan=" .. plan .. "&local_user=admin"
    return wrk.format("POST", "/rest/v1.3/jpphp/provision",
        { ["Content-Type"] = "application/x-www-form-urlencoded" }, body)
end
LUA
# The same request to a path that is only passed through.
cat >"$work/passthrough_post.lua" <<'LUA'
local n = 0
request = function()
    n = n + 1
    local body = "siteurl=https://site" .. (n % 10000) .. ".example.com/&plan=professional&local_user=admin"
    return wrk.format("POST", "/rest/v1.3/jpphp/passthrough",
        { ["Content-Type"] = "application/x-www-form-urlencoded" }, body)
end
LUA

# Runs wrk; prints "req/s p99_ms non_2xx_3xx" (answers outside 2xx/3xx, e.g. the 409s).
measure() {
    local url="$1"; shift
    local out
    out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url")"
    local rps p99 other
    rps="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
    other="$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")"
    p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
    # wrk prints latencies as 812.00us, 1.23ms or 1.05s.
    p99="$(awk -v v="$p99" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 }
        else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 }
    }')"
    echo "$rps $p99 ${other:-0}"
}

declare -a nginx_rps proxy_rps nginx_p99 proxy_p99 ratios
nginx_url="http://127.0.0.1:$NGINX_PORT/rest/v1.4/jpphp/1002/status"
proxy_url="http://127.0.0.1:$PROXY_PORT/rest/v1.4/jpphp/1002/status"
echo "== passthrough, GET, $ROUNDS alternating rounds of ${DURATION}s, $CONNECTIONS connections" >&2
# Warm-up: both proxies' upstream connections.
DURATION=2 measure "$nginx_url" >/dev/null
DURATION=2 measure "$proxy_url" >/dev/null
for round in $(seq "$ROUNDS"); do
    # Which side goes first alternates, so a trend in the machine's load hits both alike.
    if ((round % 2)); then
        read -r nr np _ < <(measure "$nginx_url")
        read -r pr pp _ < <(measure "$proxy_url")
    else
        read -r pr pp _ < <(measure "$proxy_url")
        read -r nr np _ < <(measure "$nginx_url")
    fi
    nginx_rps+=("$nr"); nginx_p99+=("$np"); proxy_rps+=("$pr"); proxy_p99+=("$pp")
    ratios+=("$(awk -v a="$pr" -v b="$nr" 'BEGIN {printf "%.3f", a / b}')")
    echo "round $round: nginx $nr req/s p99 $np ms; proxy $pr req/s p99 $pp ms; ratio ${ratios[-1]}" >&2
done

echo "== POST: passthrough vs the guarded provision route (allowed: lookup + forward; refused: cached 409)" >&2
read -r pass_rps pass_p99 pass_other < <(measure "http://127.0.0.1:$PROXY_PORT" -s "$work/passthrough_post.lua")
read -r allowed_rps allowed_p99 allowed_other < <(PLAN=professional SITE_BASE="$(date +%s)000" measure "http://127.0.0.1:$PROXY_PORT" -s "$work/provision.lua")
# Refused: personal is not in the answer; after a site's first lookup its refusal is cached.
read -r refused_rps refused_p99 refused_other < <(PLAN=personal measure "http://127.0.0.1:$PROXY_PORT" -s "$work/provision.lua")

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
n_rps="$(median "${nginx_rps[@]}")"; p_rps="$(median "${proxy_rps[@]}")"
n_p99="$(median "${nginx_p99[@]}")"; p_p99="$(median "${proxy_p99[@]}")"
ratio="$(median "${ratios[@]}")"
lookups="$(curl -fs "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '$1 == "upgrade_guard_lookups_total" {print $2}')"

cat <<TABLE

Run: $(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD), $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $ROUNDS alternating rounds (medians), $WORKERS worker(s) per proxy.

| passthrough GET | req/s | p99 (ms) |
|---|---|---|
| nginx \`proxy_pass\` | $n_rps | $n_p99 |
| upgrade-guard-proxy | $p_rps | $p_p99 |
| **ratio proxy / nginx** (median of the rounds' ratios; target >= 0.9, p99 no worse) | **$ratio** | |

| upgrade-guard-proxy, POST form | req/s | p99 (ms) | answers not 2xx |
|---|---|---|---|
| passthrough (\`/rest/v1.3/jpphp/passthrough\`) | $pass_rps | $pass_p99 | $pass_other |
| provision, allowed (a new site: site lookup, upgrade-paths lookup, then forwarded) | $allowed_rps | $allowed_p99 | $allowed_other |
| provision, refused (409 from the cache) | $refused_rps | $refused_p99 | $refused_other (all of them) |

Upstream lookups made by the guard in this run: $lookups.
Rounds (nginx / proxy req/s): ${nginx_rps[*]} / ${proxy_rps[*]}; ratios ${ratios[*]}; p99 (ms) ${nginx_p99[*]} / ${proxy_p99[*]}.
TABLE
