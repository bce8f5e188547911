//! `raptiformica deploy`'s library side: the inventory of hosts to slave, the probe that they
//! answer before anything is fetched or written, and the rollout.

pub mod inventory;
pub mod preflight;
pub mod rollout;
