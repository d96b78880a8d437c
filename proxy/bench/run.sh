#!/usr/bin/env bash
# Passthrough throughput and p99 of upgrade-guard-proxy against nginx `proxy_pass`, both in front
# of the same upstream on loopback, in alternating rounds; then the guarded provision route's
# overhead over passthrough. Prints a Markdown table for BENCHMARKS.md.
#
#   bash proxy/bench/run.sh                  # 3 rounds of 10 s per side, 64 connections
#   ROUNDS=5 DURATION=20 CONNECTIONS=128 bash proxy/bench/run.sh
#
# The upstream is an nginx server block answering from memory (a provision's JSON for any path,
# an upgrade-paths answer for lookups), so both proxies are measured, not the upstream. The
# upstream and nginx-the-proxy are one nginx (worker_processes auto); upgrade-guard-proxy runs
# with tokio's default worker count. Both log only warnings (nginx: access_log off).
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
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
work="$(mktemp -d)"
cleanup() {
    [[ -n "${proxy_pid:-}" ]] && kill "$proxy_pid" 2>/dev/null && wait "$proxy_pid" 2>/dev/null
    [[ -f "$work/nginx.pid" ]] && kill "$(cat "$work/nginx.pid")" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/logs"
cat >"$work/nginx.conf" <<NGINX
worker_processes auto;
pid $work/nginx.pid;
error_log $work/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/body;
    proxy_temp_path $work/proxy;
    upstream partner_api { server 127.0.0.1:$UPSTREAM_PORT; keepalive 256; }
    # The upstream: WordPress.com's answers, from memory.
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        default_type application/json;
        location ~ /upgrade-paths\$ { return 200 '{"jetpack-plans":["professional"],"jetpack-scan":["jetpack-scan"]}'; }
        location / { return 200 '{"success":true,"auth_required":false,"next_url":"https://example.com/next"}'; }
    }
    # nginx as the reverse proxy, as a partner would configure it (keep-alive to the upstream).
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://partner_api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
NGINX
nginx -p "$work" -c "$work/nginx.conf"

RUST_LOG=warn target/release/upgrade-guard-proxy \
    --listen "127.0.0.1:$PROXY_PORT" --admin "127.0.0.1:$ADMIN_PORT" \
    --upstream "http://127.0.0.1:$UPSTREAM_PORT" --token bench-token &
proxy_pid=$!
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$ADMIN_PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done

# A provision form, urlencoded; SITES distinct sites so provisions of one site don't queue on
# its lock (one provision per site at a time is the guard's job, not what is measured here).
cat >"$work/provision.lua" <<'LUA'
local n = 0
local plan = os.getenv("PLAN") or "professional"
request = function()
    n = n + 1
    local body = "siteurl=https://site" .. (n % 10000) .. ".example.com/&plan=" .. plan .. "&local_user=admin"
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

declare -a nginx_rps proxy_rps nginx_p99 proxy_p99
echo "== passthrough, GET, $ROUNDS alternating rounds of ${DURATION}s, $CONNECTIONS connections" >&2
for round in $(seq "$ROUNDS"); do
    read -r r p _ < <(measure "http://127.0.0.1:$NGINX_PORT/rest/v1.4/jpphp/1002/status")
    nginx_rps+=("$r"); nginx_p99+=("$p")
    read -r r p _ < <(measure "http://127.0.0.1:$PROXY_PORT/rest/v1.4/jpphp/1002/status")
    proxy_rps+=("$r"); proxy_p99+=("$p")
    echo "round $round: nginx ${nginx_rps[-1]} req/s p99 ${nginx_p99[-1]} ms; proxy ${proxy_rps[-1]} req/s p99 ${proxy_p99[-1]} ms" >&2
done

echo "== POST: passthrough vs the guarded provision route (allowed: lookup + forward; refused: cached 409)" >&2
read -r pass_rps pass_p99 pass_other < <(measure "http://127.0.0.1:$PROXY_PORT" -s "$work/passthrough_post.lua")
read -r allowed_rps allowed_p99 allowed_other < <(PLAN=professional measure "http://127.0.0.1:$PROXY_PORT" -s "$work/provision.lua")
# Refused: personal is not in the answer; after a site's first lookup its refusal is cached.
read -r refused_rps refused_p99 refused_other < <(PLAN=personal measure "http://127.0.0.1:$PROXY_PORT" -s "$work/provision.lua")

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
n_rps="$(median "${nginx_rps[@]}")"; p_rps="$(median "${proxy_rps[@]}")"
n_p99="$(median "${nginx_p99[@]}")"; p_p99="$(median "${proxy_p99[@]}")"
ratio="$(awk -v a="$p_rps" -v b="$n_rps" 'BEGIN {printf "%.3f", a / b}')"
lookups="$(curl -fs "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '$1 == "upgrade_guard_lookups_total" {print $2}')"

cat <<TABLE

Run: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $ROUNDS alternating rounds (medians).

| passthrough GET | req/s | p99 (ms) |
|---|---|---|
| nginx \`proxy_pass\` | $n_rps | $n_p99 |
| upgrade-guard-proxy | $p_rps | $p_p99 |
| **ratio proxy / nginx** (target >= 0.8) | **$ratio** | |

| upgrade-guard-proxy, POST form | req/s | p99 (ms) | answers not 2xx |
|---|---|---|---|
| passthrough (\`/rest/v1.3/jpphp/passthrough\`) | $pass_rps | $pass_p99 | $pass_other |
| provision, allowed (a lookup, then forwarded) | $allowed_rps | $allowed_p99 | $allowed_other |
| provision, refused (409 from the cache) | $refused_rps | $refused_p99 | $refused_other (all of them) |

Upstream lookups made by the guard in this run: $lookups.
Rounds (nginx / proxy req/s): ${nginx_rps[*]} / ${proxy_rps[*]}.
TABLE
