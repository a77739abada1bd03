//! Shutdown signals: SIGQUIT hands the listening sockets over to a new instance (`-u`) and
//! drains, SIGTERM drains within `server.grace_period`, SIGINT exits at once.
//!
//! Pingora's own watcher answers SIGINT with a quick shutdown of its runtimes, which can
//! hang: its accept loops are not told to stop, and once their runtime is going down each
//! `accept()` fails at once and the loop retries without yielding, so the runtime never
//! finishes (and logs an accept error per turn). "Exit at once" is what SIGINT is for, so
//! this watcher exits the process itself.

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

pub struct Signals;

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (quit, term, int) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = (quit, term, int) else {
            log::error!("cannot install the signal handlers; stop gatehouse with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => {
                log::info!("SIGINT received, exiting");
                log::logger().flush();
                std::process::exit(0)
            }
        }
    }
}
