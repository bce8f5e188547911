//! What the module files define and how it runs: hooks and events ([`hooks`]), server types
//! and their provisioners ([`server_type`]), replicated state machines ([`state_machine`]),
//! and installing user modules into `<cache-dir>/modules` ([`install`]).

pub mod hooks;
pub mod install;
pub mod server_type;
pub mod state_machine;
