//! The tasks of an HTTP/2 client connection's streams, and the per-stream
//! `send_timeout` that hyper does not have.
//!
//! hyper spawns one task per stream (the service's future, then the pipe
//! that moves the response body into h2) through the connection's executor.
//! `StreamTasks` is that executor: it wraps each task in `Watched`, which
//! shares a `SendWatch` with the stream's `ResponseBody` (handed over in a
//! task-local while the task runs, see `current_send_watch`).
//!
//! hyper pulls the next frame of a response body only once h2 has flow
//! control window for the one before. So the body arms the watch when it
//! hands over a frame (and when the response is handed to hyper) and disarms
//! it when it is polled again: an armed watch means "data is waiting for the
//! client to open its window". `Watched` runs a timer while the watch stays
//! armed in one generation; after `send_timeout` it drops the stream's task.
//! Dropping hyper's handles on an open stream makes h2 reset it
//! (`RST_STREAM CANCEL`), and dropping the body drops the upstream's side
//! (an HTTP/1 connection is closed, not pooled; an HTTP/2 stream is reset).
//! A client that answers PINGs but never sends `WINDOW_UPDATE` thus holds a
//! stream for `send_timeout`, not forever.
//!
//! A client that sent nothing at all in that time (no PING answer either) is
//! left to the connection's own check (the PING hyper sends after half of
//! `send_timeout`, unanswered): it closes the whole connection, counted
//! once, instead of each of its streams being counted as well.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tokio::time::{Instant, Sleep};

use crate::downstream::{send_watch, ClientConn, SendWatch};
use crate::stats::ClientTimeout;

/// The executor of one HTTP/2 client connection's stream tasks.
#[derive(Clone)]
pub struct StreamTasks {
    conn: Arc<ClientConn>,
    send_timeout: Duration,
}

impl StreamTasks {
    pub fn new(conn: Arc<ClientConn>, send_timeout: Duration) -> StreamTasks {
        StreamTasks { conn, send_timeout }
    }
}

impl<F> hyper::rt::Executor<F> for StreamTasks
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, task: F) {
        let watch = Arc::new(SendWatch::default());
        tokio::spawn(Watched {
            inner: Some(send_watch::scope(Arc::clone(&watch), task)),
            watch,
            seen: 0,
            reads: 0,
            timer: None,
            limit: self.send_timeout,
            conn: Arc::clone(&self.conn),
        });
    }
}

pin_project! {
    /// A stream's task, dropped when its response waits on the client for
    /// `send_timeout`. `seen` is the watch's state the timer runs for, and
    /// `reads` the connection's reads when it started; the timer is made
    /// the first time the task waits on its client.
    struct Watched<F> {
        #[pin]
        inner: Option<TaskLocalFuture<Arc<SendWatch>, F>>,
        watch: Arc<SendWatch>,
        seen: u64,
        reads: u64,
        timer: Option<Pin<Box<Sleep>>>,
        limit: Duration,
        conn: Arc<ClientConn>,
    }
}

impl<F: Future<Output = ()>> Future for Watched<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(());
        };
        if inner.poll(cx).is_ready() {
            this.inner.set(None);
            return Poll::Ready(());
        }
        let Some(state) = this.watch.armed() else {
            // A timer left running wakes the task once more, harmlessly.
            return Poll::Pending;
        };
        if state != *this.seen || this.timer.is_none() {
            *this.seen = state;
            *this.reads = this.conn.state.reads();
            let until = Instant::now() + *this.limit;
            match this.timer.as_mut() {
                Some(timer) => timer.as_mut().reset(until),
                None => *this.timer = Some(Box::pin(tokio::time::sleep_until(until))),
            }
        }
        let timer = this.timer.as_mut().expect("set above");
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if this.conn.state.reads() == *this.reads {
            // Silent: the connection's PING check closes it first.
            timer.as_mut().reset(Instant::now() + *this.limit);
            let _ = timer.as_mut().poll(cx);
            return Poll::Pending;
        }
        // h2 resets the stream when hyper's handles on it go; the body, and
        // the upstream's side with it, goes too.
        this.inner.set(None);
        this.conn.stream_timed_out(ClientTimeout::Send);
        Poll::Ready(())
    }
}
