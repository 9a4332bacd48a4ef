//! A Python script run with a client library's venv (`super::python`) and
//! driven line by line: it prints a ready line once started, then answers
//! each command on its stdin with what it prints and a `done` line.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

pub struct Scripted {
    /// For messages: the client library.
    client: String,
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Scripted {
    /// Runs `script` with `client`'s Python and `envs`, and waits for `ready`.
    pub async fn start(
        client: &str,
        script: &str,
        envs: &[(&str, String)],
        ready: &str,
    ) -> Scripted {
        let mut child = tokio::process::Command::new(super::python(client))
            .arg("-c")
            .arg(script)
            .envs(envs.iter().map(|(key, value)| (*key, value.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut scripted = Scripted {
            client: client.to_string(),
            child,
            stdin,
            lines,
        };
        scripted.read_until(ready).await;
        scripted
    }

    /// Sends `command`; what it printed before `done`.
    pub async fn command(&mut self, command: &str) -> String {
        self.send(command).await;
        self.read_until("done").await
    }

    /// Sends one line.
    pub async fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    /// What it prints before the line `end` (within 30 s).
    pub async fn read_until(&mut self, end: &str) -> String {
        let mut out = String::new();
        let client = self.client.clone();
        let read = async {
            while let Some(line) = self.lines.next_line().await.unwrap() {
                if line == end {
                    return;
                }
                out.push_str(&line);
                out.push('\n');
            }
            panic!("{client} ended before `{end}`: {out}");
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .unwrap_or_else(|_| panic!("no `{end}` from {} within 30 s", self.client));
        out
    }

    /// Waits (10 s at most) for the script to exit.
    pub async fn exit(mut self) -> ExitStatus {
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within 10 s", self.client))
            .unwrap()
    }
}
