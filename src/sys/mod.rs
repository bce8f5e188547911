//! The ground floor: what every other room stands on, importing nothing of the crate above it.
//! Processes ([`process`], the only place that starts them; [`daemon`], detached daemons and
//! the render-compare-write-start step), files replaced whole ([`fs_atomic`]), where things
//! live ([`paths`]), the flat config mapping and its key rules ([`mapping`]), progress lines,
//! node ids, shell quoting and unix time ([`clock`]).

pub mod clock;
pub mod daemon;
pub mod digest;
pub mod exit;
pub mod fs_atomic;
pub mod mapping;
pub mod paths;
pub mod process;
pub mod progress;
pub mod quote;
pub mod signals;
