//! The send watch of an HTTP/2 stream: whether its response waits on the
//! client, shared by the stream's task (`server/streams.rs`, which enforces
//! `send_timeout` per stream) and its response body (`proxy/body.rs`, which
//! arms and disarms it), handed over in a task-local while the task runs.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::task::futures::TaskLocalFuture;

tokio::task_local! {
    /// The watch of the stream whose task is running.
    static SEND_WATCH: Arc<SendWatch>;
}

/// The watch of the HTTP/2 stream being served by this task, if it is one.
pub fn current_send_watch() -> Option<Arc<SendWatch>> {
    SEND_WATCH.try_with(Arc::clone).ok()
}

/// Whether a stream's response waits on its client, shared by the stream's
/// task and its response body (one task: no ordering is needed beyond the
/// atomic itself). Bit 0: armed; the rest counts arms, so that each frame
/// handed over starts a new limit.
#[derive(Debug, Default)]
pub struct SendWatch {
    state: AtomicU64,
}

const ARMED: u64 = 1;

impl SendWatch {
    /// Data was handed to hyper and waits for the client's window.
    pub fn arm(&self) {
        let state = self.state.load(Ordering::Relaxed);
        self.state
            .store((state | ARMED).wrapping_add(2), Ordering::Relaxed);
    }

    /// hyper asked for more (or the body ended): the client is not waited on.
    pub fn disarm(&self) {
        let state = self.state.load(Ordering::Relaxed);
        if state & ARMED != 0 {
            self.state.store(state & !ARMED, Ordering::Relaxed);
        }
    }

    /// The watch's arm generation while it is armed, else `None`.
    pub fn armed(&self) -> Option<u64> {
        let state = self.state.load(Ordering::Relaxed);
        (state & ARMED != 0).then_some(state)
    }
}

/// Runs `task` with `watch` as its stream's send watch.
pub fn scope<F: Future>(watch: Arc<SendWatch>, task: F) -> TaskLocalFuture<Arc<SendWatch>, F> {
    SEND_WATCH.scope(watch, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_arm_is_a_new_generation() {
        let watch = SendWatch::default();
        assert_eq!(watch.armed(), None);
        watch.arm();
        let first = watch.armed().expect("armed");
        watch.arm();
        let second = watch.armed().expect("armed");
        assert_ne!(first, second);
        watch.disarm();
        assert_eq!(watch.armed(), None);
        watch.arm();
        assert_ne!(watch.armed(), Some(second));
    }
}
