//! Where the agent and its keeper keep their pid and log files (`<cache-dir>/mesh/`).

use crate::config::shared::mesh_dir;
use crate::sys::daemon::Daemon;
use crate::sys::paths::Paths;

/// The program name the kernel gives both the keeper and the agent.
const PROGRAM: &str = "raptiformica";

/// The keeper's pid and log files.
pub fn keeper(paths: &Paths) -> Daemon {
    Daemon::with_stem(PROGRAM, "keeper", &mesh_dir(paths))
}

/// The agent's pid and log files (the keeper writes both; the agent writes its pid itself too,
/// for systemd).
pub fn agent(paths: &Paths) -> Daemon {
    Daemon::with_stem(PROGRAM, "agent", &mesh_dir(paths))
}
