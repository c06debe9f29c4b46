//! The receiver's real binary (`ringyo-receiver`) as a child process on ephemeral ports, its
//! log read line by line as it runs.

use std::{
    net::SocketAddr,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// The lines receivers log, in the order they arrive; shared by every process given it.
#[derive(Clone, Default)]
pub(crate) struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub(crate) fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
}

/// A receiver process; killed (SIGKILL) when dropped, so a failing test leaves none behind.
pub(crate) struct Receiver {
    child: Child,
    /// Where it serves the webhook.
    pub(crate) addr: SocketAddr,
}

impl Receiver {
    /// Starts the binary with `env` (over `RINGYO_BIND` and `RINGYO_ADMIN_BIND` on ephemeral
    /// ports, `NO_COLOR`, and no `RUST_LOG`: the binary's own default) and waits until it
    /// listens. Every line it writes goes to `log`, also after this returns.
    pub(crate) async fn start(env: &[(&str, &str)], log: &Log) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringyo-receiver"))
            .env_remove("RUST_LOG")
            .env_remove("RINGYO_WEBHOOK_SECRET")
            .env_remove("RINGYO_SECRETS_FILE")
            .env("RINGYO_BIND", "127.0.0.1:0")
            .env("RINGYO_ADMIN_BIND", "127.0.0.1:0")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (listening, addr) = tokio::sync::oneshot::channel();
        let log = log.clone();
        tokio::spawn(async move {
            let mut listening = Some(listening);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = listening_on(&line) {
                    let _ = listening.take().map(|listening| listening.send(addr));
                }
                log.push(line);
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(30), addr)
            .await
            .expect("the receiver did not start")
            .expect("the receiver exited before listening");
        Self { child, addr }
    }

    /// SIGKILL, and waits for the process to be gone.
    pub(crate) async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// The webhook's address in the receiver's `listening on http://ADDR/...` line.
fn listening_on(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listening on http://")?;
    rest[..rest.find('/')?].parse().ok()
}
