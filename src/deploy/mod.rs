//! `raptiformica deploy`'s library side: the inventory of hosts to slave, and the rollout.

pub mod inventory;
pub mod rollout;
