//! Running the real `devsieve run` agent for a test: a plugin directory of
//! its own, a free port for its HTTP endpoint, its log kept in a file, and
//! SIGTERM (then SIGKILL) when the test is done.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::devsieve;

pub const SECS: fn(u64) -> Duration = Duration::from_secs;

pub struct Agent {
    pub child: Child,
    pub listen: SocketAddr,
    pub log: PathBuf,
    _log_dir: tempfile::TempDir,
}

/// A port nobody listens on now.
pub fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// `devsieve run` with the harness's flags and `extra` ones.
pub fn run_command(config: &Path, plugin_dir: &Path, listen: SocketAddr, extra: &[&str]) -> Command {
    let mut command = devsieve();
    command
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--plugin-dir")
        .arg(plugin_dir)
        .arg("--cdi-dir")
        .arg(plugin_dir.join("cdi"))
        .arg("--listen")
        .arg(listen.to_string())
        .args(extra)
        .env("DEVSIEVE_LOG", "devsieve=debug");
    command
}

impl Agent {
    pub fn start(config: &Path, plugin_dir: &Path, extra: &[&str]) -> Agent {
        let listen = free_port();
        Agent::spawn(run_command(config, plugin_dir, listen, extra), listen)
    }

    /// Spawns `command` (made by [`run_command`] with `listen`).
    pub fn spawn(mut command: Command, listen: SocketAddr) -> Agent {
        let log_dir = tempfile::tempdir().unwrap();
        let log = log_dir.path().join("agent.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = command.stdout(Stdio::null()).stderr(file).spawn().expect("starting devsieve run");
        Agent { child, listen, log, _log_dir: log_dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` on the agent's endpoint: status code and body.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect_timeout(&self.listen, SECS(2)).ok()?;
        stream.set_read_timeout(Some(SECS(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.listen).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let code = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Some((code, body))
    }

    /// `devsieve status --json` against this agent, parsed.
    pub fn status(&self) -> serde_json::Value {
        let output = devsieve().args(["status", "--json", "--listen", &self.listen.to_string()]).output().unwrap();
        assert!(output.status.success(), "devsieve status failed: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// One value from /metrics (`name{labels}` exactly as exposed), if present.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
    }

    /// Waits until `check` holds on the agent's /status, or panics with the last one.
    pub async fn wait_status(&self, timeout: Duration, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            // /status has no push channel; a test may poll it (the agent is never polled by itself).
            if let Some((200, body)) = self.get("/status")
                && let Ok(status) = serde_json::from_str::<serde_json::Value>(&body)
            {
                if check(&status) {
                    return;
                }
                if Instant::now() > deadline {
                    panic!("waited {timeout:?} for {what}; last status: {status:#}\nlog:\n{}", self.log());
                }
            } else if Instant::now() > deadline {
                panic!("waited {timeout:?} for {what}; the agent does not answer\nlog:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, and the exit status within `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).stderr(Stdio::null()).status();
        self.wait_exit(timeout)
    }

    /// Waits for the agent to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// From /proc: threads, open file descriptors, resident KiB.
    pub fn footprint(&self) -> (usize, usize, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map(|d| d.count()).unwrap_or(0);
        (field("Threads:") as usize, fds, field("VmRSS:"))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.terminate(SECS(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The socket files in `dir`.
pub fn sockets(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::FileTypeExt;
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Writes `text` to `path` atomically (as editors and ConfigMap updates do).
pub fn write_atomically(path: &Path, text: &str) {
    let temp = path.with_extension("tmp-write");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}
