//! Graceful shutdown. Cloud Run sends SIGTERM and follows with SIGKILL ten
//! seconds later, so in-flight requests get [`DRAIN_DEADLINE`] to finish and
//! the rest of the budget goes to flushing logs.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// How long in-flight requests may run on after the shutdown signal.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(8);

/// Resolves on SIGTERM (Cloud Run, `docker stop`) or Ctrl-C (a terminal).
/// If a handler cannot be installed, that signal is simply not waited for.
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("interrupted: shutting down"),
        () = term => tracing::info!("SIGTERM: shutting down"),
    }
}

/// Splits a shutdown signal in two: the first future resolves with the
/// signal (hand it to the server so it stops accepting and starts draining),
/// the second `drain` later (stop waiting for in-flight requests then).
pub fn with_deadline(
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> (
    impl Future<Output = ()> + Send + 'static,
    impl Future<Output = ()> + Send + 'static,
) {
    let signalled = Arc::new(Notify::new());
    let notify = signalled.clone();
    let stop = async move {
        shutdown.await;
        // notify_one keeps a permit when nobody is waiting yet.
        notify.notify_one();
    };
    let deadline = async move {
        signalled.notified().await;
        tokio::time::sleep(drain).await;
    };
    (stop, deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_deadline_runs_from_the_signal_not_from_the_start() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (stop, deadline) = with_deadline(
            async move {
                let _ = rx.await;
            },
            Duration::from_secs(8),
        );
        let stop = tokio::spawn(stop);
        let deadline = tokio::spawn(deadline);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!deadline.is_finished(), "no signal yet, no deadline");
        tx.send(()).unwrap();
        stop.await.unwrap();
        let signalled_at = tokio::time::Instant::now();
        deadline.await.unwrap();
        assert_eq!(signalled_at.elapsed(), Duration::from_secs(8));
    }
}
