//! `raptiformica deploy`'s library side: the inventory of hosts to slave.

pub mod inventory;
