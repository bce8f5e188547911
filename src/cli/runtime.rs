//! The command line's runtime: the one place a tokio runtime is built for the commands, and
//! the exit code a command may end with.

/// A tokio runtime for the commands that talk to machines.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?)
}

/// For a command that has no stop of its own: on SIGINT, SIGTERM or SIGHUP, stop the SSH
/// masters it started (see [`crate::remote::masters`]) and exit as the signal would have
/// (128 + its number). A watcher thread with a small runtime of its own waits for them.
pub fn end_on_signal() {
    let spawned = std::thread::Builder::new().name("signals".into()).spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        let signo = rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) else {
                return None;
            };
            tokio::select! {
                _ = int.recv() => Some(libc::SIGINT),
                _ = term.recv() => Some(libc::SIGTERM),
                _ = hup.recv() => Some(libc::SIGHUP),
            }
        });
        if let Some(signo) = signo {
            crate::remote::masters::sweep_own();
            std::process::exit(128 + signo);
        }
    });
    if let Err(e) = spawned {
        tracing::debug!("no signal watcher: {e}");
    }
}
