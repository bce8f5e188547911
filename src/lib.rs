//! raptiformica: decentralized server orchestration.
//!
//! The rooms, bottom up; each imports only from the floors below it:
//! - [`sys`]: processes, daemons, files replaced whole, paths, the flat mapping, quoting;
//! - [`consensus`]: consul: its agent's config, its HTTP API, members, locks, the replicated
//!   logs, events, snapshots;
//! - [`config`]: the layered config (modules, the mutable cache, consul's KV), its checks, which
//!   keys are commands, and the [`config::context::Context`] every command is handed;
//! - [`modules`]: hooks, events, server types, state machines, installing user modules;
//! - [`mesh`]: the overlay (the `Overlay` trait, yggdrasil), peering, the neighbours;
//! - [`remote`]: SSH, node conventions, reaching a known node or the cluster's consul;
//! - [`provision`]: slaving a machine, its artifacts, join, advertise;
//! - [`compute`]: compute back-ends, instances, spawning, packaged images;
//! - [`deploy`]: inventories and their rollout;
//! - [`node`]: bringing a node up (`mesh`);
//! - [`cluster`]: members, events and state machines from any machine (a node's own consul, or
//!   a known node over SSH);
//! - [`agent`]: the long-running agent, one file per duty;
//! - [`ui`]: the web map;
//! - [`cli`]: the command line on top (clap, help, output, the runtime, one run per command).

pub mod agent;
pub mod cli;
pub mod cluster;
pub mod compute;
pub mod config;
pub mod consensus;
pub mod deploy;
pub mod mesh;
pub mod modules;
pub mod node;
pub mod provision;
pub mod remote;
pub mod sys;
pub mod ui;
