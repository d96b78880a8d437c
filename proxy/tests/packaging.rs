//! The Debian package's files (proxy/debian/) stay in step with the binary: the environment
//! file names every variable the proxy reads, and the unit keeps its hardening.

use clap::CommandFactory;
use upgrade_guard_proxy::Config;

fn read(file: &str) -> String {
    std::fs::read_to_string(format!("{}/debian/{file}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("debian/{file}: {e}"))
}

#[test]
fn the_environment_file_names_every_variable_the_proxy_reads() {
    let env = read("env");
    let mut variables: Vec<String> = Config::command()
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    variables.push("RUST_LOG".to_owned());
    assert!(variables.len() > 10, "{variables:?}");
    for variable in &variables {
        // Set, or shown commented with its default.
        let named = env.lines().any(|line| {
            line.trim_start_matches('#')
                .starts_with(&format!("{variable}="))
        });
        assert!(named, "debian/env does not name {variable}");
    }
    // Nothing that would be a secret is set in the file as shipped.
    for secret in ["WPCOM_TOKEN", "WPCOM_CLIENT_SECRET", "UPGRADE_GUARD_REDIS"] {
        assert!(
            !env.lines()
                .any(|line| line.starts_with(&format!("{secret}="))),
            "{secret} set in debian/env"
        );
    }
}

#[test]
fn the_unit_is_hardened_and_stops_gracefully() {
    let unit = read("upgrade-guard-proxy.service");
    for line in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "Restart=on-failure",
        "EnvironmentFile=/etc/upgrade-guard-proxy/env",
        "ExecStart=/usr/bin/upgrade-guard-proxy",
        "KillSignal=SIGTERM",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|l| l == line), "no {line:?} in the unit");
    }
    // Long enough for the grace (30 s) and the detached ceiling (60 s) after SIGTERM.
    let stop = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec");
    let seconds: u64 = stop.trim_end_matches('s').parse().unwrap();
    assert!(seconds > 30 + 61, "TimeoutStopSec={stop}");
}
