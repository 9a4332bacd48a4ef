//! `source = "zookeeper"` against a real ZooKeeper (Debian's `zookeeper`
//! package, started in the foreground on a free loopback port) and the
//! real `kazoo` client (PyPI, in a venv tests/run.sh makes) registering
//! ephemeral nodes in Curator x-discovery's layout:
//! `/services/api/<id>`, each a JSON `ServiceInstance`. The proxy follows
//! the service with watches: instances that come, go, change or whose
//! session closes show up at once; a node with bad JSON is skipped; a
//! stopped ZooKeeper leaves the last set serving and `stale`; a restarted
//! one (same data directory) is followed again, with no duplicate.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use support::follow::{discovery, serving, until_serving, until_state};
use support::scripted::Scripted;
use support::tempfile_path::TempPath;
use support::{echo_backend, start_proxy, within, Backend};

const ZK_SERVER: &str = "/usr/share/zookeeper/bin/zkServer.sh";

/// Every warning logged in this test binary, as text.
static WARNINGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        WARNINGS.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Logs warnings (of every test here) into `WARNINGS`.
fn capture_warnings() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
}

/// How many warnings say a node named `node` is skipped.
fn skipped_warnings(node: &str) -> usize {
    let text = String::from_utf8_lossy(&WARNINGS.lock().unwrap()).into_owned();
    text.lines()
        .filter(|line| line.contains("instance node is skipped") && line.contains(node))
        .count()
}

/// A ZooKeeper server in the foreground on 127.0.0.1, killed by its PID
/// when dropped. Its data directory outlives a `stop`, for a restart.
struct ZooKeeper {
    addr: SocketAddr,
    directory: TempPath,
    child: Option<Child>,
}

impl ZooKeeper {
    /// Starts one on a free port and waits until it answers.
    fn start() -> ZooKeeper {
        assert!(
            Path::new(ZK_SERVER).exists(),
            "{ZK_SERVER} is missing: run tests/run.sh, which installs Debian's zookeeper"
        );
        let port = support::free_port();
        let directory = TempPath::new("zookeeper", "cfg");
        let data = directory.directory().join("data");
        std::fs::create_dir_all(&data).unwrap();
        // tickTime 500 ms: sessions may be as short as 1 s.
        std::fs::write(
            directory.as_path(),
            format!(
                "tickTime=500\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\nmaxSessionTimeout=60000\n",
                data.display()
            ),
        )
        .unwrap();
        let mut zookeeper = ZooKeeper {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            directory,
            child: None,
        };
        zookeeper.run();
        zookeeper
    }

    /// `zkServer.sh start-foreground` (which execs java, so the PID is the
    /// server's), then polls `srvr` until it says it serves.
    fn run(&mut self) {
        let log = std::fs::File::create(self.directory.directory().join("server.log")).unwrap();
        let child = Command::new(ZK_SERVER)
            .arg("start-foreground")
            .arg(self.directory.as_path())
            .env("ZOOCFGDIR", self.directory.directory())
            .env(
                "JVMFLAGS",
                "-Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1",
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("zkServer.sh runs");
        self.child = Some(child);
        let start = Instant::now();
        while !self.answers() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ZooKeeper exited with {status}: {}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "ZooKeeper did not answer within 60 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether `srvr` (a four-letter command ZooKeeper allows by default)
    /// says the server is up.
    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)) else {
            return false;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut reply = String::new();
        stream.write_all(b"srvr").is_ok()
            && stream.read_to_string(&mut reply).is_ok()
            && reply.contains("Mode: standalone")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.directory.directory().join("server.log")).unwrap_or_default()
    }

    /// Kills the server, as a crash would; the data directory stays.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data directory.
    fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.stop();
    }
}

/// kazoo in a child Python, driven by commands on its stdin, registering
/// Curator-shaped ephemeral nodes under `/services/api/`.
struct Kazoo(Scripted);

const KAZOO: &str = r#"
import json, logging, os, sys, time
from kazoo.client import KazooClient

# Its own reconnections are expected here: no warning for each.
logging.getLogger("kazoo").setLevel(logging.ERROR)
# Reconnects every 0.1-0.5 s, so a restarted ZooKeeper finds the session
# again well within its timeout.
retry = dict(max_tries=-1, delay=0.1, backoff=2, max_delay=0.5)
zk = KazooClient(hosts=os.environ["ZK"], timeout=10.0, connection_retry=retry)
zk.start(timeout=30)

def instance(id, port):
    # What Curator's JsonInstanceSerializer writes for a ServiceInstance.
    return json.dumps({
        "name": "api", "id": id, "address": "127.0.0.1", "port": port,
        "sslPort": None, "payload": None,
        "registrationTimeUTC": int(time.time() * 1000), "serviceType": "DYNAMIC",
        "uriSpec": {"parts": [
            {"value": "scheme", "variable": True}, {"value": "://", "variable": False},
            {"value": "address", "variable": True}, {"value": ":", "variable": False},
            {"value": "port", "variable": True}]},
    }).encode()

print("started", flush=True)
for line in sys.stdin:
    command, *args = line.split(maxsplit=2)
    path = "/services/api/" + args[0] if args else None
    # zk.retry: a connection lost just after a reconnect is retried, as
    # kazoo's docs advise for every call.
    if command == "add":
        zk.retry(zk.create, path, instance(args[0], int(args[1])), ephemeral=True, makepath=True)
    elif command == "set":
        zk.retry(zk.set, path, instance(args[0], int(args[1])))
    elif command == "raw":
        zk.retry(zk.create, path, args[1].encode(), ephemeral=True, makepath=True)
    elif command == "remove":
        zk.retry(zk.delete, path)
    elif command == "state":
        print(zk.state)
    elif command == "close":
        zk.stop()
        zk.close()
        print("closed", flush=True)
        sys.exit(0)
    print("done", flush=True)
"#;

impl Kazoo {
    async fn start(zookeeper: &ZooKeeper) -> Kazoo {
        let envs = [("ZK", zookeeper.addr.to_string())];
        Kazoo(Scripted::start("kazoo", KAZOO, &envs, "started").await)
    }

    async fn command(&mut self, command: &str) -> String {
        self.0.command(command).await
    }

    /// Registers `backend` as instance `id`.
    async fn add(&mut self, id: &str, backend: &Backend) {
        self.command(&format!("add {id} {}", backend.addr.port()))
            .await;
    }

    /// Polls until the client has reconnected (it retries every 0.5 s at most).
    async fn until_connected(&mut self) {
        let start = Instant::now();
        while !self.command("state").await.contains("CONNECTED") {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "kazoo did not reconnect within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Closes the session (its ephemeral nodes go with it) and exits.
    async fn close(mut self) {
        self.0.send("close").await;
        self.0.read_until("closed").await;
        assert!(self.0.exit().await.success());
    }
}

fn follower(zookeeper: &ZooKeeper, refresh: &str, extra: &str) -> String {
    support::follow::follower_config(
        "round_robin",
        "",
        &format!(
            "source = \"zookeeper\"\nhosts = \"{}\"\nservice = \"api\"\nrefresh = \"{refresh}\"\n{extra}",
            zookeeper.addr
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kazoo_instances_are_followed_by_watches_and_a_closed_session_takes_its_servers() {
    let (a, b, c, d) = (
        echo_backend("a").await,
        echo_backend("b").await,
        echo_backend("c").await,
        echo_backend("d").await,
    );
    let zookeeper = tokio::task::block_in_place(ZooKeeper::start);
    let mut first = Kazoo::start(&zookeeper).await;
    first.add("i-a", &a).await;
    // refresh 60s: every change below comes from a watch, not from polling.
    let proxy = start_proxy(&follower(&zookeeper, "60s", "")).await;
    until_serving(&proxy, &["a"], Duration::from_secs(10)).await;
    let state = until_state(&proxy, "ok", Duration::from_secs(1)).await;
    assert_eq!(state["servers"], 1, "{state}");
    assert_eq!(
        state["source"],
        format!("zookeeper /services/api at {}", zookeeper.addr),
        "{state}"
    );

    let mut second = Kazoo::start(&zookeeper).await;
    second.add("i-b", &b).await;
    let took = until_serving(&proxy, &["a", "b"], Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(3), "a new node took {took:?}");

    first.command("remove i-a").await;
    until_serving(&proxy, &["b"], Duration::from_secs(5)).await;

    // A node that is not a ServiceInstance is skipped; the good ones apply.
    first.command("raw i-bad {not json").await;
    first
        .command("raw i-noport {\"address\": \"127.0.0.1\"}")
        .await;
    first.add("i-c", &c).await;
    until_serving(&proxy, &["b", "c"], Duration::from_secs(5)).await;
    let state = until_state(&proxy, "ok", Duration::from_secs(1)).await;
    assert_eq!(state["servers"], 2, "{state}");

    // A node's data changes: its server moves.
    first.command(&format!("set i-c {}", d.addr.port())).await;
    until_serving(&proxy, &["b", "d"], Duration::from_secs(5)).await;

    // The second session ends: its ephemeral node, and server, go.
    second.close().await;
    until_serving(&proxy, &["d"], Duration::from_secs(5)).await;
    let state = until_state(&proxy, "ok", Duration::from_secs(1)).await;
    assert_eq!(state["servers"], 1, "{state}");
    assert!(state["last_error"].is_null(), "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_zookeeper_leaves_the_set_stale_and_a_restarted_one_is_resynced() {
    let (a, b, c) = (
        echo_backend("a").await,
        echo_backend("b").await,
        echo_backend("c").await,
    );
    capture_warnings();
    let mut zookeeper = tokio::task::block_in_place(ZooKeeper::start);
    let mut kazoo = Kazoo::start(&zookeeper).await;
    kazoo.add("i-a", &a).await;
    kazoo.add("i-b", &b).await;
    kazoo.command("raw i-broken {oops").await;
    let proxy = start_proxy(&follower(
        &zookeeper,
        "500ms",
        "timeout = \"1s\"\nsession_timeout = \"2s\"",
    ))
    .await;
    until_serving(&proxy, &["a", "b"], Duration::from_secs(10)).await;
    until_state(&proxy, "ok", Duration::from_secs(1)).await;
    assert_eq!(skipped_warnings("i-broken"), 1);

    // Down: the connection drops, the set stays, the source says stale.
    zookeeper.stop();
    let state = until_state(&proxy, "stale", Duration::from_secs(5)).await;
    assert_eq!(state["servers"], 2, "{state}");
    assert_eq!(serving(&proxy, 6).await, ["a", "b"]);

    // Down past usherd's session timeout: the client gives the session up
    // and the source tries new ones, still keeping the set.
    let expired = within(Duration::from_secs(20), || async {
        discovery(&proxy).await["last_error"]
            .as_str()
            .is_some_and(|error| error.contains("connecting"))
    })
    .await;
    assert!(expired.is_some(), "{}", discovery(&proxy).await);
    assert_eq!(serving(&proxy, 6).await, ["a", "b"]);

    // Back with the same data: kazoo's session survived (its timeout is
    // 10 s), usherd's new session reads everything again.
    tokio::task::block_in_place(|| zookeeper.restart());
    until_state(&proxy, "ok", Duration::from_secs(10)).await;
    assert_eq!(serving(&proxy, 6).await, ["a", "b"]);
    kazoo.until_connected().await;
    kazoo.add("i-c", &c).await;
    until_serving(&proxy, &["a", "b", "c"], Duration::from_secs(5)).await;
    let state = until_state(&proxy, "ok", Duration::from_secs(1)).await;
    assert_eq!(state["servers"], 3, "{state}");

    // A short outage, and a change as soon as it is over.
    tokio::task::block_in_place(|| zookeeper.restart());
    kazoo.until_connected().await;
    kazoo.command("remove i-a").await;
    until_serving(&proxy, &["b", "c"], Duration::from_secs(10)).await;
    let state = until_state(&proxy, "ok", Duration::from_secs(5)).await;
    assert_eq!(state["servers"], 2, "{state}");
    // The bad node was read again by each resync, and warned of once.
    assert_eq!(skipped_warnings("i-broken"), 1);
}
