//! nginx as the bare-proxy baseline, shared by the latency bench and the suite.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// nginx as a bare reverse proxy to the same mock (the reference for what a proxy hop costs):
/// `proxy_pass` over a keep-alive upstream pool, response buffering off, one process (no master, so
/// stopping it stops everything), no access log.
/// Used when `nginx` is installed (Debian package `nginx-light`); skipped otherwise.
pub struct Nginx {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(upstream: std::net::SocketAddr) -> Option<Nginx> {
        Self::start_pinned(upstream, None)
    }

    /// As [`Nginx::start`], run under `taskset -c CPUS` when given.
    pub fn start_pinned(upstream: std::net::SocketAddr, cpus: Option<&str>) -> Option<Nginx> {
        Self::start_workers(upstream, cpus, 1)
    }

    /// As [`Nginx::start_pinned`], with `workers` worker processes (more than one: under a
    /// master process, which `child` is).
    pub fn start_workers(upstream: std::net::SocketAddr, cpus: Option<&str>, workers: usize) -> Option<Nginx> {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let dir = tempfile::tempdir().ok()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let conf = format!(
            "worker_processes {workers};\nmaster_process {master};\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             worker_rlimit_nofile 16384;\n             events {{ worker_connections 8192; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               client_max_body_size 32m;\n  client_body_buffer_size 1m;\n\
               upstream mock {{ server {upstream}; keepalive 256; }}\n\
               server {{\n    listen 127.0.0.1:{port};\n    location / {{\n\
                 proxy_pass http://mock;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
                 proxy_buffering off;\n    }}\n  }}\n}}\n",
            d = dir.path().display(),
            master = if workers > 1 { "on" } else { "off" },
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).ok()?;
        let mut cmd = match cpus {
            Some(c) => {
                let mut t = std::process::Command::new("taskset");
                t.args(["-c", c, bin]);
                t
            }
            None => std::process::Command::new(bin),
        };
        let child = cmd
            .args(["-p", &dir.path().display().to_string(), "-c", "nginx.conf"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                eprintln!(
                    "nginx did not start; see {}/error.log — measuring without it",
                    dir.path().display()
                );
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Nginx { child, addr, _dir: dir })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // A master stops its workers on SIGTERM (SIGKILL would orphan them).
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
