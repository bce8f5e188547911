//! An error that ends the program with a chosen exit code.

/// An error that carries the exit code to end with (e.g. a remote command's status).
#[derive(Debug, thiserror::Error)]
#[error("exit status {0}")]
pub struct ExitWith(pub i32);

/// An error that is printed like any other and ends the program with `code`: an outcome a
/// script tells apart from a plain failure (e.g. `state append --wait`: appended, not yet
/// applied everywhere).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct FailWith {
    pub code: i32,
    pub message: String,
}
