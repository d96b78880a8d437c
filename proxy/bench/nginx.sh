# Sourced by run.sh and ab.sh: the nginx pair both benchmarks stand on.
#
#   start_nginx WORK UPSTREAM_PORT NGINX_PORT WORKERS
#   stop_nginx WORK
#
# The upstream: WordPress.com's answers, from memory (a provision's JSON for any path, an
# upgrade-paths answer, and the public site lookup naming siteN.example.com's blog ID N, so that
# the guard holds each site under its names as it would at WordPress.com), in WORK/upstream.
# nginx-the-proxy: a second nginx in WORK, with keep-alive to the upstream, as a partner would
# configure it, and WORKERS worker processes. Both log only warnings (access_log off).

start_nginx() {
    local work="$1" upstream_port="$2" nginx_port="$3" workers="$4"
    mkdir -p "$work/logs" "$work/upstream/logs"
    cat >"$work/upstream/nginx.conf" <<NGINX
worker_processes auto;
pid $work/upstream/nginx.pid;
error_log $work/upstream/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/upstream/body;
    server {
        listen 127.0.0.1:$upstream_port;
        default_type application/json;
        location ~ /upgrade-paths\$ { return 200 '{"jetpack-plans":["professional"],"jetpack-scan":["jetpack-scan"]}'; }
        location ~ ^/rest/v1\.1/sites/site(\d+)\.example\.com\$ { return 200 '{"ID":\$1,"URL":"https://site\$1.example.com"}'; }
        location / { return 200 '{"success":true,"auth_required":false,"next_url":"https://example.com/next"}'; }
    }
}
NGINX
    cat >"$work/nginx.conf" <<NGINX
worker_processes $workers;
pid $work/nginx.pid;
error_log $work/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/body;
    proxy_temp_path $work/proxy;
    upstream partner_api { server 127.0.0.1:$upstream_port; keepalive 256; }
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            proxy_pass http://partner_api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
NGINX
    nginx -p "$work/upstream" -c "$work/upstream/nginx.conf"
    nginx -p "$work" -c "$work/nginx.conf"
}

stop_nginx() {
    local work="$1"
    [[ -f "$work/nginx.pid" ]] && kill "$(cat "$work/nginx.pid")" 2>/dev/null
    [[ -f "$work/upstream/nginx.pid" ]] && kill "$(cat "$work/upstream/nginx.pid")" 2>/dev/null
    return 0
}
