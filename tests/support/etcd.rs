//! A real etcd cluster for tests: Debian's `etcd` binary, each member a
//! process on loopback ports of its own, with a data directory that
//! outlives a stop so a member can be started again.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;
use super::tempfile_path::TempPath;

/// One member: its ports and, while it runs, its process.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    process: Option<Child>,
}

/// A cluster of members started together.
pub struct EtcdCluster {
    members: Vec<Member>,
    data: TempPath,
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster answers.
    pub fn start(size: usize) -> EtcdCluster {
        let members = (0..size)
            .map(|n| Member {
                name: format!("m{n}"),
                client_port: free_port(),
                peer_port: free_port(),
                process: None,
            })
            .collect();
        let mut cluster = EtcdCluster {
            members,
            data: TempPath::new("etcd", "data"),
        };
        for index in 0..size {
            cluster.start_member(index);
        }
        cluster.wait_healthy(&(0..size).collect::<Vec<_>>());
        cluster
    }

    /// `127.0.0.1:port` of every member, comma-separated (for `etcd://`).
    pub fn hosts(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `http://127.0.0.1:port` of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// Starts member `index` (again, with its data directory).
    pub fn start_member(&mut self, index: usize) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        let member = &self.members[index];
        let client = format!("http://127.0.0.1:{}", member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let child = Command::new("etcd")
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(self.data.directory().join(&member.name))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &initial.join(",")])
            .args([
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "usherd-test",
            ])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd runs (tests/run.sh installs etcd-server)");
        self.members[index].process = Some(child);
    }

    /// Kills member `index` (SIGKILL).
    pub fn kill_member(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].process.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Waits until each of `members` answers a read that needs a quorum.
    pub fn wait_healthy(&self, members: &[usize]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for &index in members {
            let url = format!(
                "http://127.0.0.1:{}/health",
                self.members[index].client_port
            );
            loop {
                let healthy = Command::new("curl")
                    .args(["-s", "--max-time", "2", &url])
                    .output()
                    .is_ok_and(|out| {
                        String::from_utf8_lossy(&out.stdout).contains("\"health\":\"true\"")
                    });
                if healthy {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd member {index} not healthy within 30 s"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            self.kill_member(index);
        }
    }
}
