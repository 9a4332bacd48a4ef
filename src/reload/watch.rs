//! Reload when the config file changes on disk.
//!
//! Directories are watched, not the file: editors and deploy tools often
//! write a new file and rename it over the old one, which a watch on the file
//! itself would lose. Only events that concern the config reach the reload:
//! its own name in its directory, `..data` there (the symlink Kubernetes swaps
//! when a ConfigMap changes), and, when the path is a symlink, the name it
//! points to in the target's directory. Everything else in those directories
//! (an access log written beside the config, say) is ignored, so traffic
//! cannot hold a reload back.
//!
//! `notify-debouncer-full` delivers each event `DEBOUNCE` after it happened,
//! whatever follows it, so a change is applied within about `DEBOUNCE` plus
//! the reload itself even while the file keeps being written. A reload
//! happens only if the file's text changed since it was last read; a file that
//! is briefly missing or half-written is read once more, `RETRY` later, before
//! the failure is reported.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult};
use tokio::sync::mpsc::UnboundedReceiver;

use super::{ReloadError, Trigger};
use crate::control::App;
use crate::downstream::stopped;

/// How long after a file event it is handed on.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// How long after a file that could not be read or parsed it is read again
/// before the failure is reported.
const RETRY: Duration = Duration::from_millis(500);

/// The name Kubernetes gives the symlink it swaps when a ConfigMap changes.
const KUBERNETES_DATA_LINK: &str = "..data";

/// The directory entries whose changes concern the config file at `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Interests {
    entries: BTreeSet<(PathBuf, OsString)>,
}

impl Interests {
    fn of(path: &Path) -> Interests {
        let mut entries = BTreeSet::new();
        let (directory, name) = split(path);
        entries.insert((directory.clone(), name));
        entries.insert((directory, OsString::from(KUBERNETES_DATA_LINK)));
        let is_symlink = std::fs::symlink_metadata(path)
            .map(|metadata| metadata.file_type().is_symlink())
            .unwrap_or(false);
        if is_symlink {
            if let Ok(target) = std::fs::canonicalize(path) {
                entries.insert(split(&target));
            }
        }
        Interests { entries }
    }

    fn directories(&self) -> BTreeSet<PathBuf> {
        self.entries.iter().map(|(dir, _)| dir.clone()).collect()
    }

    fn concerns(&self, changed: &Path) -> bool {
        let (directory, name) = split(changed);
        self.entries.contains(&(directory, name))
    }
}

/// A path's directory (absolute when possible) and file name.
fn split(path: &Path) -> (PathBuf, OsString) {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let directory = std::fs::canonicalize(&directory).unwrap_or(directory);
    let name = path.file_name().map(OsString::from).unwrap_or_default();
    (directory, name)
}

/// Starts watching the running config's file (nothing to do if it has none).
pub fn watch_config_file(app: Arc<App>) -> notify::Result<()> {
    let Some(path) = app.snapshots.load().config.path.clone() else {
        return Ok(());
    };
    let (events, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Vec<PathBuf>>();
    // One look right away: the file may have changed between the start's read
    // and the watch being in place.
    events.send(Vec::new()).ok();
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
        match result {
            Ok(batch) => {
                let paths = batch.into_iter().flat_map(|event| event.event.paths);
                // The receiver is gone only after shutdown.
                events.send(paths.collect()).ok();
            }
            Err(errors) => {
                for error in errors {
                    tracing::warn!(%error, "config file watch error");
                }
            }
        }
    })?;
    let mut interests = Interests::of(&path);
    for directory in interests.directories() {
        debouncer.watch(&directory, RecursiveMode::NonRecursive)?;
    }
    tracing::info!(path = %path.display(), "watching the config file for changes");
    let mut shutdown = app.shutdown.subscribe();
    tokio::spawn(async move {
        let mut first_look = true;
        loop {
            let paths = tokio::select! {
                paths = receiver.recv() => match paths {
                    Some(paths) => paths,
                    None => return,
                },
                _ = stopped(&mut shutdown) => return,
            };
            if !first_look && !paths.iter().any(|changed| interests.concerns(changed)) {
                continue;
            }
            first_look = false;
            if changed(&app, &path).await {
                reload(&app, &mut receiver).await;
            }
            // A repointed symlink moves what is watched.
            let now = Interests::of(&path);
            if now != interests {
                let (before, after) = (interests.directories(), now.directories());
                for gone in before.difference(&after) {
                    debouncer.unwatch(gone).ok();
                }
                for added in after.difference(&before) {
                    if let Err(error) = debouncer.watch(added, RecursiveMode::NonRecursive) {
                        tracing::warn!(%error, directory = %added.display(), "cannot watch the config's directory");
                    }
                }
                interests = now;
            }
        }
    });
    Ok(())
}

/// Reloads the file; a file that cannot be read or parsed gets one more try
/// `RETRY` later (it may have been caught half-written or mid-rename), and
/// only that one's failure is reported.
async fn reload(app: &Arc<App>, receiver: &mut UnboundedReceiver<Vec<PathBuf>>) {
    if let Err(ReloadError::Config(_)) = app.reload_file(Trigger::FileChange, false).await {
        tokio::time::sleep(RETRY).await;
        // The retry reads whatever those events announced.
        while receiver.try_recv().is_ok() {}
        app.reload_file(Trigger::FileChange, true).await.ok();
    }
}

/// True if the file's text differs from what the last reload read.
async fn changed(app: &App, path: &Path) -> bool {
    let text = tokio::fs::read_to_string(path).await.ok();
    let last = app.last_file_text.lock().unwrap_or_else(|p| p.into_inner());
    text.is_none() || *last != text
}
