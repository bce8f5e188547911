//! One file per subcommand: each `run` turns arguments into library calls and prints.

pub mod advertise;
pub mod agent;
pub mod artifacts;
pub mod attach;
pub mod available;
pub mod clean;
pub mod config;
pub mod deploy;
pub mod event;
pub mod hook;
pub mod inject;
pub mod instances;
pub mod join;
pub mod members;
pub mod mesh;
pub mod modules;
pub mod package;
pub mod remove;
pub mod slave;
pub mod snapshot;
pub mod spawn;
pub mod ssh;
pub mod state;
pub mod ui;
pub mod unpack;

pub use super::output::{print_json, print_table};
