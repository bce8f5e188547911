//! Before `deploy` fetches the artifacts or writes the cluster's secrets: does any host answer?
//! Every first hop (a host, or the outermost jump host on its way: the machines this one
//! connects to itself) is probed over TCP, all at once, each for up to `--ssh-wait`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::inventory::Inventory;
use crate::remote::reach::{self, Silence, Unreachable};
use crate::sys::progress::Progress;

/// How long a host that refuses the connection (it is up, and nothing listens on its SSH port)
/// is probed: long enough for an sshd that is still starting, well short of `--ssh-wait`.
pub const REFUSALS: Duration = Duration::from_secs(10);

/// A host given up before anything started: why (one line, with what to check), and after how
/// long.
pub type Given = (String, Duration);

/// What the probes found.
#[derive(Debug, Default)]
pub struct Preflight {
    /// Whether a first hop answered; when none did, nothing may be fetched or written.
    pub answered: bool,
    /// The first hops given up before one answered, by entry.
    pub unreachable: BTreeMap<usize, Given>,
}

/// Probes every first hop of `inventory` at once, until one answers or all have given up.
/// The probes still running when one answers are dropped: their hosts get the whole patience
/// again when they are slaved.
pub async fn probe_first_hops(inventory: &Inventory, patience: Duration, progress: &Progress) -> Preflight {
    let hops = inventory.first_hops();
    let behind = match inventory.entries.len() - hops.len() {
        0 => String::new(),
        n => format!(" ({n} more behind them)"),
    };
    let step = progress.step("local", &format!("reach {} host(s){behind}", hops.len()));
    let mut probes: FuturesUnordered<_> = hops
        .iter()
        .map(|&i| {
            let e = &inventory.entries[i];
            async move {
                let t = Instant::now();
                let result = reach::probe_patiently(&e.dst, e.port, patience, REFUSALS).await;
                (i, result, t.elapsed())
            }
        })
        .collect();
    let mut found = Preflight::default();
    while let Some((i, result, took)) = probes.next().await {
        match result {
            Ok(()) => {
                found.answered = true;
                step.done(&format!("{} answers", inventory.entries[i]));
                return found;
            }
            Err(u) => {
                found.unreachable.insert(i, (explain(&u), took));
            }
        }
    }
    found
}

/// Why a host was given up, with what to check, on one line (the summary shows it).
pub fn explain(u: &Unreachable) -> String {
    let hint = match u.why {
        Silence::Refused => "is sshd running there, and is the port in the inventory right?",
        Silence::Unresolved(_) => "is the dst in the inventory right?",
        Silence::NotSsh(_) => "is the machine up, and is the port in the inventory its SSH port?",
        Silence::NoAnswer(_) => "is the machine up and its address right? (or give it longer: --ssh-wait)",
        Silence::Failed(_) => "is the machine up and its address right?",
    };
    format!("{u}: {hint}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::inventory::Format;
    use crate::remote::reach::closed_port;

    fn inventory(text: &str) -> Inventory {
        Inventory::parse(text, Format::Json, std::path::Path::new("i.json")).unwrap()
    }

    #[tokio::test]
    async fn one_answer_is_enough_and_ends_the_wait() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let _ = tokio::io::AsyncWriteExt::write_all(&mut conn, b"SSH-2.0-test\r\n").await;
            }
        });
        let closed = closed_port();
        // The closed one refuses for 10 s; the open one answers at once, which ends the wait.
        let inv = inventory(&format!(
            r#"[{{"dst":"127.0.0.1","port":{closed}}},{{"dst":"127.0.0.1","port":{open}}},
                {{"dst":"10.0.0.9","via":"127.0.0.1:{open}"}}]"#
        ));
        let t = Instant::now();
        let found = probe_first_hops(&inv, Duration::from_secs(30), &Progress::new(true)).await;
        assert!(found.answered);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn when_every_host_refuses_all_are_given_up_with_the_reason() {
        let (a, b) = (closed_port(), closed_port());
        let inv = inventory(&format!(
            r#"[{{"dst":"127.0.0.1","port":{a}}},{{"dst":"127.0.0.2","port":{b}}},{{"dst":"x","via":"127.0.0.2:{b}"}}]"#
        ));
        let found = probe_first_hops(&inv, Duration::from_secs(1), &Progress::new(true)).await;
        assert!(!found.answered);
        assert_eq!(found.unreachable.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
        let (why, _) = &found.unreachable[&0];
        assert_eq!(
            why,
            &format!(
                "nothing answers on 127.0.0.1:{a} (connection refused): is sshd running there, and is the port in the inventory right?"
            )
        );
    }
}
