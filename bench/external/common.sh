# Sourced by run.sh and callgrind.sh, from the repository's root, with the tools the script needs
# as arguments: installs the missing ones (Debian packages of the same names), builds the bench
# server, and makes a work directory that goes, with the server, when the script exits.
#
#   source bench/external/common.sh wrk valgrind
#   "$server" --listen ... >"$work/server.log" 2>&1 &
#   server_pid=$!
#   wait_listening 60

missing=()
for tool in "$@"; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

cargo build --release --example bench_server
server="${CARGO_TARGET_DIR:-target}/release/examples/bench_server"
work="$(mktemp -d)"
cleanup() {
    [[ -n "${server_pid:-}" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# Waits at most SECONDS for the server's log to say it listens.
wait_listening() {
    local _
    for _ in $(seq "$(($1 * 10))"); do
        grep -q '^listening' "$work/server.log" 2>/dev/null && return 0
        sleep 0.1
    done
}
