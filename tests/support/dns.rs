//! A real DNS server for discovery tests: dnsmasq (Debian `dnsmasq-base`) on
//! a free loopback port, answering from a hosts directory it rereads when a
//! file changes (no signal needed), NXDOMAIN for unknown names under `test`.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tempfile_path::TempPath;

pub struct Dnsmasq {
    pub addr: SocketAddr,
    child: Child,
    directory: TempPath,
}

impl Dnsmasq {
    /// Starts dnsmasq with `hosts` (lines of `IP NAME`) and TTL `ttl`;
    /// `extra` are more options, e.g. `--srv-host=...`.
    pub fn start(hosts: &str, ttl: u32, extra: &[&str]) -> Dnsmasq {
        let directory = TempPath::new("hosts", "d");
        let hosts_dir = directory.directory().join("hosts.d");
        std::fs::create_dir(&hosts_dir).unwrap();
        std::fs::write(hosts_dir.join("hosts"), hosts).unwrap();
        // Bounded: a free port is found within a few tries.
        for _ in 0..20 {
            let port = free_port();
            let mut child = Command::new("dnsmasq")
                .args([
                    "--keep-in-foreground",
                    "--no-resolv",
                    "--no-hosts",
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--local=/test/",
                    "--pid-file=",
                    "--log-facility=-",
                ])
                .arg(format!("--port={port}"))
                .arg(format!("--local-ttl={ttl}"))
                .arg(format!("--hostsdir={}", hosts_dir.display()))
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("dnsmasq is installed (tests/run.sh installs dnsmasq-base)");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken meanwhile: try another
                }
                if TcpStream::connect(addr).is_ok() {
                    return Dnsmasq {
                        addr,
                        child,
                        directory,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            child.kill().ok();
            child.wait().ok();
        }
        panic!("dnsmasq did not start");
    }

    fn hosts_file(&self) -> PathBuf {
        self.directory.directory().join("hosts.d").join("hosts")
    }

    /// Replaces the hosts file in one rename (dnsmasq rereads it).
    pub fn set_hosts(&self, hosts: &str) {
        let staged = self.directory.directory().join("hosts.new");
        std::fs::write(&staged, hosts).unwrap();
        std::fs::rename(&staged, self.hosts_file()).unwrap();
    }

    /// Freezes the server: queries time out (`kill -STOP`).
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused server answer again.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.resume_quietly();
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Dnsmasq {
    fn resume_quietly(&self) {
        Command::new("kill")
            .arg("-CONT")
            .arg(self.child.id().to_string())
            .status()
            .ok();
    }
}

/// A loopback port free for both TCP and UDP just now.
fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
