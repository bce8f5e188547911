//! Bringing a node up: `mesh` joins this machine to the overlay and, from three known nodes on,
//! to consensus ([`mesh`]).

pub mod mesh;
