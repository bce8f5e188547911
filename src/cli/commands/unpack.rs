//! `raptiformica unpack ROOT` (hidden): a node unpacks the bundle slaving sends (a
//! zstd-compressed tar on stdin), only below its cache dir and install prefix (see
//! [`crate::provision::bundle::unpack`]).

use std::path::Path;

pub fn run(root: &Path) -> anyhow::Result<()> {
    let n = crate::provision::bundle::unpack(std::io::stdin().lock(), root)?;
    eprintln!("unpacked {n} file(s)");
    Ok(())
}
