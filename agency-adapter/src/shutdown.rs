//! The process's stop request: the future that completes when the operator
//! asks the adapter to stop (SIGINT or SIGTERM). `main` hands it to the
//! daemon's `run`; `tail` stops on it.
//!
//! This module only listens for signals; it never decides what stopping
//! means (each caller does) and never exits the process.

/// Completes on SIGINT or (on Unix) SIGTERM; never, where signals cannot
/// be listened for.
pub async fn signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
