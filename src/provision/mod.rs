//! Making a machine a node: slaving it over SSH ([`slave`]: upload, provision, assimilate),
//! the artifacts it gets ([`artifacts`]), a machine asking a member to slave it ([`join`]), a member slaving one for a workstation
//! ([`relay`]: `slave --from-member`), and
//! the address a node advertises ([`advertise`]).

pub mod advertise;
pub mod artifacts;
pub mod assimilate;
pub mod bootstrap;
pub mod bundle;
pub mod join;
pub mod relay;
pub mod slave;
pub mod upload;
