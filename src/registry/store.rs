//! The registry's state file: the catalog as JSON, replaced atomically (a
//! temporary file beside it, fsync, rename, fsync of the directory), so a
//! process killed at any moment leaves the old file or the new one, never a
//! half-written one. Writes are coalesced: at most one per `WRITE_EVERY`,
//! always of the latest catalog.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::Catalog;

/// The shortest time between two writes of the file.
const WRITE_EVERY: Duration = Duration::from_millis(100);

pub struct Store {
    path: PathBuf,
    /// The catalog to write next, if it changed since the last write.
    pending: Arc<Mutex<Option<Catalog>>>,
    wake: Arc<Notify>,
}

impl Store {
    /// Reads the file (a missing one is an empty catalog; an unreadable one is
    /// set aside as `<file>.corrupt` and reported) and starts the writer.
    pub fn open(path: PathBuf) -> (Catalog, Store) {
        let catalog = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Catalog>(&bytes) {
                Ok(catalog) => {
                    tracing::info!(
                        path = %path.display(),
                        instances = catalog.instances.len(),
                        "registry: state restored"
                    );
                    catalog.restored()
                }
                Err(error) => {
                    let aside = path.with_extension("corrupt");
                    std::fs::rename(&path, &aside).ok();
                    tracing::error!(
                        path = %path.display(),
                        %error,
                        kept_as = %aside.display(),
                        "registry: the state file cannot be read; starting empty"
                    );
                    Catalog::new()
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Catalog::new(),
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "registry: cannot read the state file; starting empty");
                Catalog::new()
            }
        };
        let store = Store {
            path,
            pending: Arc::default(),
            wake: Arc::new(Notify::new()),
        };
        let (path, pending, wake) = (
            store.path.clone(),
            Arc::clone(&store.pending),
            Arc::clone(&store.wake),
        );
        tokio::spawn(async move {
            loop {
                wake.notified().await;
                let next = pending.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(catalog) = next {
                    let path = path.clone();
                    let written =
                        tokio::task::spawn_blocking(move || write_atomically(&path, &catalog))
                            .await;
                    if let Ok(Err(error)) = written {
                        tracing::error!(%error, "registry: cannot write the state file");
                    }
                }
                tokio::time::sleep(WRITE_EVERY).await;
            }
        });
        (catalog, store)
    }

    /// The catalog changed: it will be written soon.
    pub fn changed(&self, catalog: &Catalog) {
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(catalog.clone());
        self.wake.notify_one();
    }

    /// Writes `catalog` now (on the way out).
    pub fn flush(&self, catalog: &Catalog) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Err(error) = write_atomically(&self.path, catalog) {
            tracing::error!(%error, "registry: cannot write the state file");
        }
    }
}

fn write_atomically(path: &Path, catalog: &Catalog) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(catalog).map_err(std::io::Error::other)?;
    let directory = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut staged = path.as_os_str().to_owned();
    staged.push(".tmp");
    let staged = PathBuf::from(staged);
    {
        let mut file = std::fs::File::create(&staged)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&staged, path)?;
    std::fs::File::open(directory)?.sync_all()
}
