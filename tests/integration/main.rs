//! Integration tests: the real binary against temporary cache dirs.

#![allow(clippy::disallowed_methods)] // the tests drive the binary, docker and ssh directly

mod harness;

mod agent;
mod attach;
mod cli;
mod cluster;
mod compute;
mod config;
mod deploy;
mod docker;
mod engine;
mod events;
mod from_member;
mod healing;
mod history;
mod house;
mod join;
mod mesh;
mod modules;
mod original;
mod package;
mod remove;
mod renumber;
mod shared_config;
mod snapshot;
mod ssh_left;
mod state;
mod sudo;
mod trust;
mod ui;
mod vagrant;
