//! A real `redis-server` on a free loopback port, owned by one test: stopped and restarted on the
//! same port at will, killed when dropped.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to get the binary, said when it is missing: these tests must not pass without Redis.
const MISSING: &str = "\
redis-server was not found on PATH. The tests of the `redis` feature run a real Redis on \
loopback: install it (Debian/Ubuntu: `apt-get install redis-server`; macOS: `brew install \
redis`) or set REDIS_SERVER to the binary's path. `cargo test` without `--features redis` \
needs no Redis.";

pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port, ready for commands.
    pub fn start() -> Self {
        // Another process may take the free port between our probe and the server's bind.
        for _ in 0..5 {
            let port = free_port();
            let mut server = Self { port, child: None };
            if server.try_start() {
                return server;
            }
        }
        panic!("redis-server did not start on any free loopback port");
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server, at once and without saving (nothing is persisted anyway).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, with an empty data set.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.try_start(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    /// Spawns the server and waits for it to answer PING; false if it exited (port taken).
    fn try_start(&mut self) -> bool {
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let spawned = Command::new(&binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(error) if error.kind() == ErrorKind::NotFound => panic!("{MISSING}"),
            Err(error) => panic!("could not run {binary}: {error}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let child = self.child.as_mut().expect("just started");
            if child.try_wait().ok().flatten().is_some() {
                self.child = None;
                return false;
            }
            let pid = child.id();
            match self.server_pid() {
                // Our server: another one that got the same free port first would answer too
                // (and stop under us when its test ends), so the answer must name our process.
                Some(serving) if serving == pid => return true,
                Some(_) => {
                    self.stop();
                    return false;
                }
                None => {}
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {} within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The process id of the server answering on the port (`INFO server`), once one answers.
    fn server_pid(&self) -> Option<u32> {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).ok()?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        stream.write_all(b"INFO server\r\n").ok()?;
        let mut answer = Vec::new();
        let mut chunk = [0; 4096];
        // The answer is one bulk string of a few KiB; `process_id` comes early in it.
        while answer.len() < 64 * 1024 {
            let read = stream.read(&mut chunk).ok().filter(|&n| n > 0)?;
            answer.extend_from_slice(&chunk[..read]);
            let text = String::from_utf8_lossy(&answer);
            if let Some((_, rest)) = text.split_once("process_id:")
                && let Some((pid, _)) = rest.split_once("\r\n")
            {
                return pid.trim().parse().ok();
            }
        }
        None
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}
