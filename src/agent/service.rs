//! Where systemd runs (it is PID 1), it keeps the agent running instead of the keeper: `mesh`
//! installs `raptiformica-agent.service` (restart always, after 1 s) and enables it, so the
//! agent also comes back after a reboot. `KillMode=process`: restarting the agent leaves the
//! daemons it supervises running (it adopts them again).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::sys::paths::Paths;
use crate::sys::process::Shell;

/// The unit's name.
pub const UNIT: &str = "raptiformica-agent.service";

/// Whether systemd manages this machine.
pub fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn unit_file() -> PathBuf {
    Path::new("/etc/systemd/system").join(UNIT)
}

/// The unit for the agent run by `exe` with the cache dir of `paths`.
pub fn unit(exe: &Path, paths: &Paths) -> String {
    format!(
        "# Written by `raptiformica mesh`: keeps this node's agent running.\n\
         [Unit]\n\
         Description=raptiformica agent (keeps this node in its cluster)\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Environment=\"RAPTIFORMICA_CACHE_DIR={cache}\"\n\
         ExecStart=\"{exe}\" agent\n\
         Restart=always\n\
         RestartSec=1\n\
         KillMode=process\n\
         StandardOutput=append:{log}\n\
         StandardError=append:{log}\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        cache = paths.cache_dir.display(),
        exe = exe.display(),
        log = super::daemons::agent(paths).log_file.display(),
    )
}

/// Installs and starts the unit; false when it was in place and running already.
pub fn ensure(paths: &Paths) -> anyhow::Result<bool> {
    let exe = std::env::current_exe().context("cannot find this binary to run the agent")?;
    let text = unit(&exe, paths);
    let file = unit_file();
    let changed = std::fs::read_to_string(&file).ok().as_deref() != Some(text.as_str());
    if changed {
        crate::sys::fs_atomic::write_atomic(&file, text.as_bytes())
            .with_context(|| format!("cannot write `{}`", file.display()))?;
    }
    let active = Shell::new(
        "checking the agent's unit",
        format!("systemctl is-active --quiet {UNIT}"),
    )
    .output()
    .is_ok_and(|o| o.success());
    if !changed && active {
        return Ok(false);
    }
    Shell::new(
        "starting the agent's unit",
        format!("systemctl daemon-reload && systemctl enable --quiet {UNIT} && systemctl restart {UNIT}"),
    )
    .run()?;
    Ok(true)
}

/// Stops and disables the unit and removes its file (`clean` on a node); false when there was
/// no unit.
pub fn remove() -> anyhow::Result<bool> {
    let file = unit_file();
    if !file.is_file() {
        return Ok(false);
    }
    // Stopped first: a unit that goes on running would start the agent again.
    Shell::new(
        "stopping the agent's unit",
        format!("systemctl disable --now --quiet {UNIT} || systemctl stop {UNIT}"),
    )
    .run()?;
    std::fs::remove_file(&file).with_context(|| format!("cannot remove `{}`", file.display()))?;
    Shell::new("reloading systemd", "systemctl daemon-reload").run()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_restarts_the_agent_and_leaves_the_daemons() {
        let paths = Paths::resolve(Some("/var/lib/my cache".into()), None, None);
        let u = unit(Path::new("/usr/local/bin/raptiformica"), &paths);
        assert!(u.contains("ExecStart=\"/usr/local/bin/raptiformica\" agent\n"));
        assert!(u.contains("Environment=\"RAPTIFORMICA_CACHE_DIR=/var/lib/my cache\"\n"));
        assert!(u.contains("Restart=always\n") && u.contains("RestartSec=1\n"));
        assert!(
            u.contains("KillMode=process\n"),
            "restarting the agent must not kill consul"
        );
        assert!(u.contains("WantedBy=multi-user.target"));
    }
}
