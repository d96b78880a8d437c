//! The binary itself: clear start-up errors for bad flags, an unreadable certificate or an
//! unreachable Redis, and a graceful exit on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_upgrade-guard-proxy");

/// Runs the binary with `args` (and free ports unless they name theirs) to its end, which must come within 30 s.
fn run(args: &[&str]) -> Output {
    let mut command = Command::new(BINARY);
    for flag in ["--listen", "--admin"] {
        if !args.contains(&flag) {
            command.args([flag, "127.0.0.1:0"]);
        }
    }
    let mut child = command
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?}: still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The binary failed to start, saying all of `expected` on stderr.
fn refused(args: &[&str], expected: &[&str]) {
    let output = run(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{args:?} started");
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    for text in expected {
        assert!(stderr.contains(text), "{args:?}: no {text:?} in {stderr}");
    }
}

#[test]
fn bad_flags_are_refused_with_the_flag_named() {
    refused(
        &["--listen", "nowhere"],
        &["--listen", "invalid socket address"],
    );
    refused(&["--token", "t", "--no-such-flag"], &["--no-such-flag"]);
    refused(&["--token", "t", "--tls-cert", "cert.pem"], &["--tls-key"]);
    refused(&["--client-id", "id"], &["--client-secret"]);
    refused(
        &["--token", "t", "--upstream", "ftp://example.com"],
        &["--upstream", "ftp://example.com"],
    );
    refused(
        &["--token", "t", "--upstream", "https://example.com/rest"],
        &["--upstream"],
    );
}

#[test]
fn an_unreadable_certificate_or_key_is_named() {
    let cert = common::TestCert::new();
    let (cert_path, key_path) = (cert.cert.to_str().unwrap(), cert.key.to_str().unwrap());
    refused(
        &[
            "--token",
            "t",
            "--tls-cert",
            "/no/such/cert.pem",
            "--tls-key",
            key_path,
        ],
        &["cannot read the certificate chain from /no/such/cert.pem (--tls-cert)"],
    );
    refused(
        &[
            "--token",
            "t",
            "--tls-cert",
            cert_path,
            "--tls-key",
            "/no/such/key.pem",
        ],
        &["cannot read a private key from /no/such/key.pem (--tls-key)"],
    );
    // A certificate file where the key should be holds no key.
    refused(
        &[
            "--token",
            "t",
            "--tls-cert",
            cert_path,
            "--tls-key",
            cert_path,
        ],
        &["cannot read a private key from", "(--tls-key)"],
    );
    // The two swapped: the key file holds no certificate, and the flag that named it is said.
    refused(
        &[
            "--token",
            "t",
            "--tls-cert",
            key_path,
            "--tls-key",
            cert_path,
        ],
        &[
            &format!("cannot read the certificate chain from {key_path} (--tls-cert)"),
            "no items found",
        ],
    );
    // Another certificate's key.
    let other = common::TestCert::new();
    refused(
        &[
            "--token",
            "t",
            "--tls-cert",
            cert_path,
            "--tls-key",
            other.key.to_str().unwrap(),
        ],
        &["the certificate (--tls-cert) and key (--tls-key) can't be served together"],
    );
}

#[test]
fn an_unreachable_redis_is_named_without_its_password() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://:hunter2@127.0.0.1:{closed}/0");
    refused(
        &["--token", "t", "--redis", &url],
        &[&format!(
            "cannot reach Redis at redis://***@127.0.0.1:{closed}/0 (--redis)"
        )],
    );
    let output = run(&["--token", "t", "--redis", &url]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("hunter2"));
    // redis's error says its source's words and names it as its source: said once.
    assert!(
        stderr.matches("os error").count() <= 1,
        "a cause repeated: {stderr}"
    );
    refused(
        &["--token", "t", "--redis", "not a url"],
        &["--redis not a url"],
    );
}

/// Runs the binary with `--listen` on a port another socket holds, and `extra` flags: the port's
/// address and the binary's output.
fn on_a_taken_port(extra: &[&str]) -> (String, Output) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = Command::new(BINARY)
        .args(["--listen", &addr, "--admin", "127.0.0.1:0", "--token", "t"])
        .args(extra)
        .env_clear()
        .output()
        .unwrap();
    (addr, output)
}

#[test]
fn a_taken_port_is_named() {
    let (addr, output) = on_a_taken_port(&[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr} (--listen)")),
        "{stderr}"
    );
}

/// With `--log-format json`, a log shipper reading stdout sees why the proxy did not start: one
/// `ERROR` object, the stderr line's error in its `error` field.
#[test]
fn a_start_up_error_is_a_json_line_too() {
    let (addr, output) = on_a_taken_port(&["--log-format", "json"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let said = format!("cannot listen on {addr} (--listen)");
    assert!(stderr.contains(&said), "{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("every stdout line is JSON"))
        .collect();
    let [line] = &lines[..] else {
        panic!("one line on stdout: {stdout}");
    };
    assert_eq!(line["level"], "ERROR", "{line}");
    assert_eq!(
        line["message"], "upgrade-guard-proxy did not start",
        "{line}"
    );
    let error = line["error"].as_str().expect("an error field");
    assert!(error.contains(&said), "{line}");
    assert!(stderr.contains(error), "the same words on stderr: {stderr}");

    // As text, stdout stays empty: the line is on stderr only, as before.
    let (_, output) = on_a_taken_port(&[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        output.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// Kills the child if the test fails half-way.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigterm_stops_it_cleanly() {
    stops_cleanly_on_sigterm(&[]);
}

/// `--workers 1` serves on Tokio's single-threaded scheduler, more on the multi-threaded one:
/// both serve and stop alike.
#[test]
fn sigterm_stops_it_cleanly_whatever_its_workers() {
    stops_cleanly_on_sigterm(&["--workers", "1"]);
    stops_cleanly_on_sigterm(&["--workers", "2"]);
    refused(&["--token", "t", "--workers", "0"], &["--workers"]);
}

fn stops_cleanly_on_sigterm(extra: &[&str]) {
    let mut child = Running(
        Command::new(BINARY)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--token",
                "t",
            ])
            .args(["--upstream", "http://127.0.0.1:9"])
            .args(extra)
            .env_clear()
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The start-up log line says where it listens; it is the first line.
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("upgrade-guard-proxy listening"), "{line}");
    let addr = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("addr="))
        .expect("the address in the log line");
    assert!(std::net::TcpStream::connect(addr).is_ok());

    let pid = libc::pid_t::try_from(child.0.id()).unwrap();
    // SAFETY: kill(2) with a signal number has no memory effects; the pid is our own child,
    // not yet waited for, so it can't have been reused.
    #[allow(unsafe_code)]
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0, "SIGTERM not sent");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}
