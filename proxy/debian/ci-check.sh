#!/usr/bin/env bash
# The Debian package, end to end: builds it with cargo-deb, installs it, checks the unit with
# systemd-analyze (where there is one), starts the installed binary exactly as the unit's
# ExecStart would (a clean environment, the installed environment file) in front of the fake
# WordPress.com, checks /healthz, /readyz and that a downgrade is refused (409), stops it with
# SIGTERM (it must exit 0), and removes the package. Run as root (dpkg); .ci/run calls it last.
#
#   bash proxy/debian/ci-check.sh
#
# Measured on 2 shared cores: installing cargo-deb (3.8) about 2.5 min, once; this script with
# cargo-deb installed and the release build cold, 237 s (the build nearly all of it); warm, a few
# seconds. `dpkg -r` keeps the conffile /etc/upgrade-guard-proxy/env, as removal does.
set -euo pipefail
cd "$(dirname "$0")/../.."

step() { printf '\n-- %s\n' "$*"; }
started=$SECONDS
work="$(mktemp -d)"
fake_pid=""
proxy_pid=""
installed=""
cleanup() {
    [[ -n "$proxy_pid" ]] && kill "$proxy_pid" 2>/dev/null && wait "$proxy_pid" 2>/dev/null
    [[ -n "$fake_pid" ]] && kill "$fake_pid" 2>/dev/null && wait "$fake_pid" 2>/dev/null
    [[ -n "$installed" ]] && dpkg -r upgrade-guard-proxy >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT

step "cargo-deb"
if ! cargo deb --version >/dev/null 2>&1; then
    cargo install cargo-deb --locked
fi
cargo deb --version

step "build the package"
target="${CARGO_TARGET_DIR:-target}"
cargo deb -p upgrade-guard-proxy --output "$target/debian/"
deb="$(ls -t "$target"/debian/upgrade-guard-proxy_*.deb | head -n 1)"
dpkg-deb --info "$deb"
dpkg-deb --contents "$deb"

step "install it"
dpkg -i "$deb"
installed=yes
unit=/lib/systemd/system/upgrade-guard-proxy.service
env_file=/etc/upgrade-guard-proxy/env
test -x /usr/bin/upgrade-guard-proxy
test -f "$unit"
[[ "$(stat -c '%a %U' "$env_file")" == "600 root" ]] || {
    echo "$env_file must be root's alone: $(stat -c '%a %U' "$env_file")"
    exit 1
}
/usr/bin/upgrade-guard-proxy --version

step "systemd-analyze verify"
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify "$unit"
else
    echo "no systemd-analyze here: skipped"
fi

step "the fake WordPress.com"
cargo build -p upgrade-guard-proxy --example fake_upstream
"$target/debug/examples/fake_upstream" >"$work/fake" &
fake_pid=$!
for _ in $(seq 300); do
    grep -q '^WPCOM_TOKEN=' "$work/fake" 2>/dev/null && break
    kill -0 "$fake_pid"
    sleep 0.05
done
fake_url="$(sed -n 's/^WPCOM_API_URL=//p' "$work/fake")"
token="$(sed -n 's/^WPCOM_TOKEN=//p' "$work/fake")"
[[ -n "$fake_url" && -n "$token" ]]

step "start the installed binary as the unit's ExecStart, with its environment file"
exec_start="$(sed -n 's/^ExecStart=//p' "$unit")"
# The installed file, with the upstream pointed at the fake and free ports (said in the start-up
# line); nothing else changed. The fake's token is the caller's: the file as shipped sets none.
cp "$env_file" "$work/env"
{
    echo "WPCOM_API_URL=$fake_url"
    echo "UPGRADE_GUARD_LISTEN=127.0.0.1:0"
    echo "UPGRADE_GUARD_ADMIN=127.0.0.1:0"
} >>"$work/env"
# systemd gives the service a clean environment plus the file's variables.
env -i PATH=/usr/bin:/bin bash -c 'set -a; . "$1"; set +a; exec $2' _ "$work/env" "$exec_start" \
    >"$work/proxy.log" 2>&1 &
proxy_pid=$!
for _ in $(seq 200); do
    grep -q 'upgrade-guard-proxy listening' "$work/proxy.log" && break
    kill -0 "$proxy_pid"
    sleep 0.05
done
listen="$(grep -o ' addr=[0-9.:]*' "$work/proxy.log" | head -n 1 | cut -d= -f2)"
admin="$(grep -o ' admin_addr=[0-9.:]*' "$work/proxy.log" | head -n 1 | cut -d= -f2)"
[[ -n "$listen" && -n "$admin" ]] || { cat "$work/proxy.log"; exit 1; }

step "/healthz, /readyz, a downgrade refused, an upgrade forwarded"
curl -fsS "http://$admin/healthz"
echo
curl -fsS "http://$admin/readyz"
echo
provision() {
    curl -sS -o "$work/answer" -w '%{http_code}' -X POST "http://$listen/rest/v1.3/jpphp/provision" \
        -H "Authorization: Bearer $token" \
        -d "siteurl=$1" -d "plan=$2" -d local_user=admin
}
status="$(provision https://professional.example.com/ jetpack-backup-realtime)"
cat "$work/answer"
echo
[[ "$status" == 409 ]] || { echo "a downgrade answered $status"; cat "$work/proxy.log"; exit 1; }
grep -q '"error":"upgrade_not_allowed"' "$work/answer"
status="$(provision https://realtime.example.com/ professional)"
[[ "$status" == 200 ]] || { echo "an upgrade answered $status"; cat "$work/answer" "$work/proxy.log"; exit 1; }
curl -fsS "http://$admin/metrics" | grep '^upgrade_guard_decisions_total'

step "SIGTERM: a graceful stop, exit 0"
kill -TERM "$proxy_pid"
code=0
wait "$proxy_pid" || code=$?
proxy_pid=""
cat "$work/proxy.log"
[[ "$code" == 0 ]] || { echo "exited $code after SIGTERM"; exit 1; }

step "remove it"
dpkg -r upgrade-guard-proxy
installed=""
if test -e /usr/bin/upgrade-guard-proxy; then
    echo "dpkg -r left /usr/bin/upgrade-guard-proxy"
    exit 1
fi

echo
echo "package check passed in $((SECONDS - started)) s"
