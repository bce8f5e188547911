//! The command line's runtime: the one place a tokio runtime is built for the commands, and
//! the exit code a command may end with.

/// A tokio runtime for the commands that talk to machines.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?)
}
