//! Checks that this machine can run an overlay (a TUN device, CAP_NET_ADMIN, IPv6), with
//! errors that name the docker flag or kernel setting to fix.

use std::fs::OpenOptions;

use anyhow::bail;

/// Bit of CAP_NET_ADMIN in the capability masks.
const CAP_NET_ADMIN: u32 = 12;

/// Fails with the fix when a TUN interface cannot be made here.
pub fn check_tun() -> anyhow::Result<()> {
    if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/net/tun") {
        bail!(
            "the overlay needs a TUN device, but /dev/net/tun cannot be opened ({e}).\n\
             hint: in a docker container, start it with `--device /dev/net/tun --cap-add NET_ADMIN`; \
             on a machine, load the kernel module with `modprobe tun`"
        );
    }
    if let Some(false) = has_capability(CAP_NET_ADMIN) {
        bail!(
            "the overlay needs CAP_NET_ADMIN to create its TUN interface, and this process lacks it.\n\
             hint: run as root; in a docker container add `--cap-add NET_ADMIN`"
        );
    }
    if std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6").is_ok_and(|v| v.trim() == "1") {
        bail!(
            "IPv6 is disabled here (net.ipv6.conf.all.disable_ipv6 = 1) and the overlay cannot start without it.\n\
             hint: in a docker container add `--sysctl net.ipv6.conf.all.disable_ipv6=0 \
             --sysctl net.ipv6.conf.default.disable_ipv6=0`; on a machine run \
             `sysctl -w net.ipv6.conf.all.disable_ipv6=0`"
        );
    }
    Ok(())
}

/// Whether this process holds capability `bit` (None when it cannot be told).
fn has_capability(bit: u32) -> Option<bool> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    let mask = u64::from_str_radix(hex, 16).ok()?;
    Some(mask & (1 << bit) != 0)
}
