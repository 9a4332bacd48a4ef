//! Starts a proxy: the control state (`control::App`) with its first
//! snapshot, its listeners (all or none), the registry, discovery sources
//! and health checks, the admin API, and the loop that applies discovered
//! sets. The top of the control side: the one module that wires the admin
//! API into the listener sets.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin;
use crate::config::Config;
use crate::control::{self, App};
use crate::server::BindError;

/// Binds every listener of `config` (all or none) and starts serving.
pub async fn start(config: Config) -> Result<Arc<App>, BindError> {
    let config = Arc::new(config);
    let (app, discovered) = App::new(Arc::clone(&config), serve_admin);
    let mut control = app.control.lock().await;
    let (listeners, admin) = app.bind_missing(&control, &config).await?;
    // The registry is up before the admin listener that serves it.
    app.start_control(&mut control, &config);
    app.switch_listeners(&mut control, listeners, admin);
    drop(control);
    tokio::spawn(control::apply_discovered(Arc::clone(&app), discovered));
    Ok(app)
}

/// Serves the admin API on an admin listener (`control::ServeAdmin`).
fn serve_admin(listener: TcpListener, app: Arc<App>, stop: watch::Receiver<bool>) {
    tokio::spawn(admin::serve(listener, app, stop));
}
