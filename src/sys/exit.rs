//! An error that ends the program with a chosen exit code.

/// An error that carries the exit code to end with (e.g. a remote command's status).
#[derive(Debug, thiserror::Error)]
#[error("exit status {0}")]
pub struct ExitWith(pub i32);
