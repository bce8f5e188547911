//! Reaching other machines: SSH identity and sessions ([`ssh`]) as root or a sudo user
//! ([`login`]; [`sudo`]: one whose sudo wants a password), the pinned host keys ([`pins`]), a quick TCP
//! probe ([`reach`]), the end of every SSH master this process starts ([`masters`]), what a target lacks ([`files`]), the conventions of a node's paths
//! ([`on_node`]), running a command on a known node ([`nodes`]), the cluster's consul
//! through a tunnel ([`cluster_link`]) and the workstations whose keys every node authorizes
//! ([`workstations`]).

pub mod cluster_link;
pub mod files;
pub mod login;
pub mod masters;
pub mod nodes;
pub mod on_node;
pub mod pins;
pub mod reach;
pub mod ssh;
pub mod sudo;
pub mod workstations;
