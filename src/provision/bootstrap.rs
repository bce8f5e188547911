//! Running a server type's provisioners on a target, each once for the files it runs from.

use anyhow::bail;

use crate::config::context::Context;
use crate::config::mapping::PREFIX;
use crate::modules::server_type;
use crate::remote::on_node::{REMOTE_BIN, REMOTE_CACHE};
use crate::remote::ssh::Remote;
use crate::sys::paths::INSTALL_PREFIX;
use crate::sys::quote::quote;

use super::upload::sha256_hex;
/// Where a target records the provisioners that ran to completion, one file each
/// (`<server>/<provisioner>`) holding the digest they ran with. Delete it to force a re-run.
pub const PROVISIONED_DIR: &str = "var/provisioned";

/// Runs one provisioner on the target: its `source` checked out (if set), then `bootstrap`.
/// Skipped (returns false) when the target's record says it already ran with the same
/// bootstrap and uploaded files; a provisioner with a `source` always runs (its checkout
/// may have moved on).
pub(super) async fn provision(
    ctx: &Context,
    remote: &Remote,
    server: &str,
    p: &server_type::Provisioner,
    uploaded: &str,
) -> anyhow::Result<bool> {
    let Some(bootstrap) = &p.bootstrap else {
        bail!(
            "provisioner `{server}/{}` has no `bootstrap` command (`{PREFIX}/server/{server}/{}/bootstrap`)",
            p.name,
            p.name
        );
    };
    let checkout = match &p.source {
        Some(source) => {
            let dir = format!("/usr/etc/{}", p.name);
            format!(
                "if [ -d {dir}/.git ]; then git -C {dir} pull -q --ff-only; else git clone -q {src} {dir}; fi\ncd {dir}\n",
                dir = quote(&dir),
                src = quote(source)
            )
        }
        None => format!("cd {INSTALL_PREFIX}\n"),
    };
    let script = format!(
        "set -e\nexport PATH={REMOTE_BIN}:$PATH RAPTIFORMICA_INSTALL_DIR={INSTALL_PREFIX} RAPTIFORMICA_CACHE_DIR={REMOTE_CACHE}\n{checkout}{bootstrap}\n"
    );
    let record = quote(&format!("{REMOTE_CACHE}/{PROVISIONED_DIR}/{server}/{}", p.name));
    let digest = sha256_hex(format!("{script}\n{uploaded}").as_bytes());
    // One round trip: compare the record, else run the bootstrap in a subshell (its `exit`
    // ends only that) and record it once it succeeded.
    let skip = if p.source.is_none() {
        format!("if [ \"$(cat {record} 2>/dev/null)\" = {digest} ]; then echo {ALREADY}; exit 0; fi\n")
    } else {
        String::new()
    };
    let wrapped = format!(
        "{skip}rm -f {record}\n(\n{script})\nrc=$?\n[ $rc -eq 0 ] || exit $rc\nmkdir -p \"$(dirname {record})\"\necho {digest} > {record}\n"
    );
    let out = remote
        .run_limited(&format!("`{server}/{}` bootstrap", p.name), &wrapped, None, p.timeout)
        .await?;
    if out.stdout.trim() == ALREADY {
        return Ok(false);
    }
    if ctx.verbose > 0 {
        for line in out.stdout.lines().chain(out.stderr.lines()) {
            eprintln!("  | {line}");
        }
    }
    Ok(true)
}

/// What the provision script prints when its record matches.
const ALREADY: &str = "raptiformica:already-provisioned";
