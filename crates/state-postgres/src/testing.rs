//! A throwaway PostgreSQL cluster for tests: `initdb` in a temporary directory, the server on
//! 127.0.0.1 and a free port, trust authentication on loopback, no fsync; killed and removed on
//! drop. The server binaries come from `CONDUIT_PG_BIN` or Debian's `/usr/lib/postgresql/*/bin`.
//! PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` user (or
//! `nobody`) through `runuser`.
//!
//! With the binaries missing, [`Cluster::start`] returns `None` (the test skips, saying why), or
//! panics when `CONDUIT_REQUIRE_PEERS=1` (CI, where a skipped test would hide a failure).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running throwaway cluster.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    user: Option<(String, u32, u32)>,
    port: u16,
    server: Option<Child>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cluster(127.0.0.1:{})", self.port)
    }
}

fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("CONDUIT_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b)
}

/// `(name, uid, gid)` of the user to run the server as when this process is root.
fn unprivileged_user() -> Option<(String, u32, u32)> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return None;
    }
    for name in ["postgres", "nobody"] {
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id").args([flag, name]).output().ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())?
        };
        if let (Some(u), Some(g)) = (id("-u"), id("-g")) {
            return Some((name.to_string(), u, g));
        }
    }
    panic!("running as root and there is neither a postgres nor a nobody user to run PostgreSQL as");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Cluster {
    /// Initialises and starts a cluster; `None` (after saying why) when PostgreSQL is not
    /// installed and `CONDUIT_REQUIRE_PEERS` is not `1`.
    pub fn start() -> Option<Cluster> {
        let Some(bin) = bin_dir() else {
            let why = "PostgreSQL's server binaries were not found (apt-get install postgresql, or set CONDUIT_PG_BIN)";
            if std::env::var("CONDUIT_REQUIRE_PEERS").as_deref() == Ok("1") {
                panic!("{why}");
            }
            eprintln!("skipped: {why}");
            return None;
        };
        let mut random = [0u8; 6];
        getrandom::fill(&mut random).unwrap();
        let dir = std::env::temp_dir().join(format!("conduit-pg-{}", conduit_core::hex::encode(&random)));
        std::fs::create_dir(&dir).unwrap();
        let user = unprivileged_user();
        if let Some((_, uid, gid)) = &user {
            std::os::unix::fs::chown(&dir, Some(*uid), Some(*gid)).unwrap();
        }
        let mut cluster = Cluster {
            bin,
            dir,
            user,
            port: free_port(),
            server: None,
        };
        let data = cluster.data_dir();
        let out = cluster
            .command("initdb")
            .args([
                "-D",
                &data,
                "-U",
                "conduit",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ])
            .output()
            .expect("running initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.resume();
        Some(cluster)
    }

    fn data_dir(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.user {
            Some((name, _, _)) => {
                let mut c = Command::new("runuser");
                c.args(["-u", name, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server again after [`Cluster::stop`] (same port, same data); returns once it
    /// accepts connections.
    pub fn resume(&mut self) {
        assert!(self.server.is_none(), "the cluster is already running");
        let log = std::fs::File::create(self.dir.join("server.log")).unwrap();
        if let Some((_, uid, gid)) = &self.user {
            std::os::unix::fs::chown(self.dir.join("server.log"), Some(*uid), Some(*gid)).unwrap();
        }
        let child = self
            .command("postgres")
            .args(["-D", &self.data_dir(), "-p", &self.port.to_string()])
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=300",
            ])
            .args(["-c", &format!("unix_socket_directories={}", self.dir.display())])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting postgres");
        self.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() && self.accepts() {
                return;
            }
            if let Some(status) = self.server.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("postgres exited ({status}): {}", self.log());
            }
            assert!(Instant::now() < deadline, "postgres did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the server answers queries (not only the socket: it refuses while starting up).
    fn accepts(&self) -> bool {
        self.command("pg_isready")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "conduit"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Stops the server at once (SIGKILL: what a crash or a lost network looks like to clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            // runuser forwards signals poorly: kill the postmaster by its pid file.
            let pid = std::fs::read_to_string(Path::new(&self.data_dir()).join("postmaster.pid"))
                .ok()
                .and_then(|p| p.lines().next().map(|l| l.trim().to_string()));
            if let Some(pid) = &pid {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
            let _ = child.kill();
            let _ = child.wait();
            if let Some(pid) = &pid {
                let deadline = Instant::now() + Duration::from_secs(10);
                while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            // A killed postmaster leaves its socket lock behind.
            let _ = std::fs::remove_file(self.dir.join(format!(".s.PGSQL.{}.lock", self.port)));
            let _ = std::fs::remove_file(self.dir.join(format!(".s.PGSQL.{}", self.port)));
            // Children of a killed postmaster exit on their own; wait for the port to free.
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = std::fs::remove_file(Path::new(&self.data_dir()).join("postmaster.pid"));
        }
    }

    /// Creates a fresh database and returns its URL (no TLS: loopback).
    pub fn database(&self, name: &str) -> String {
        let out = self
            .command("createdb")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "conduit", name])
            .output()
            .expect("running createdb");
        assert!(
            out.status.success(),
            "createdb {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://conduit@127.0.0.1:{}/{name}", self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A [`crate::PgConfig`] for a test database: no TLS, short timeouts, the given replica id.
pub fn config(url: &str, replica: &str) -> crate::PgConfig {
    let mut c = crate::PgConfig::new(url);
    c.tls = crate::TlsMode::Disable;
    c.replica_id = replica.into();
    c.pool_size = 8;
    c.statement_timeout = Duration::from_secs(10);
    c.connect_timeout = Duration::from_secs(10);
    c.heartbeat_stale = Duration::from_secs(2);
    c
}
