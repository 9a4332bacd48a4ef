//! Reload when the config file changes on disk.
//!
//! The directory is watched, not the file: editors and deploy tools often
//! write a new file and rename it over the old one (and Kubernetes swaps a
//! symlink), which a watch on the file itself would lose. Events are debounced;
//! a reload happens only if the file's text changed since it was last read;
//! a file that is briefly missing or half-written is read once more after the
//! debounce before the failure is reported.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};

use super::{ReloadError, Trigger};
use crate::app::App;
use crate::server::stopped;

/// Quiet time after the last file event before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Starts watching the running config's file (nothing to do if it has none).
pub fn watch_config_file(app: Arc<App>) -> notify::Result<()> {
    let Some(path) = app.snapshots.load().config.path.clone() else {
        return Ok(());
    };
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    let (events, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    // One look right away: the file may have changed between the start's read
    // and the watch being in place.
    events.send(()).ok();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            Ok(event) if !matches!(event.kind, EventKind::Access(_)) => {
                // The receiver is gone only after shutdown.
                events.send(()).ok();
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "config file watch error"),
        }
    })?;
    watcher.watch(&directory, RecursiveMode::NonRecursive)?;
    tracing::info!(path = %path.display(), "watching the config file for changes");
    let mut shutdown = app.shutdown.subscribe();
    tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            tokio::select! {
                event = receiver.recv() => if event.is_none() { return },
                _ = stopped(&mut shutdown) => return,
            }
            if !quiet_for(DEBOUNCE, &mut receiver).await {
                return;
            }
            if !changed(&app, &path).await {
                continue;
            }
            if let Err(ReloadError::Config(_)) = app.reload_file(Trigger::FileChange, false).await {
                // Perhaps caught half-written or mid-rename: once more, then report.
                if !quiet_for(DEBOUNCE, &mut receiver).await {
                    return;
                }
                app.reload_file(Trigger::FileChange, true).await.ok();
            }
        }
    });
    Ok(())
}

/// Waits until no event has come for `quiet`; false if the channel closed.
async fn quiet_for(
    quiet: Duration,
    receiver: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
) -> bool {
    loop {
        match tokio::time::timeout(quiet, receiver.recv()).await {
            Ok(Some(())) => continue,
            Ok(None) => return false,
            Err(_quiet) => return true,
        }
    }
}

/// True if the file's text differs from what the last reload read.
async fn changed(app: &App, path: &Path) -> bool {
    let text = tokio::fs::read_to_string(path).await.ok();
    let last = app.last_file_text.lock().unwrap_or_else(|p| p.into_inner());
    text.is_none() || *last != text
}
