//! The command line, clap derive only. Arguments become a [`Context`](crate::config::context::Context)
//! and per-command option structs; nothing here does work.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod cluster;
mod machines;

pub use cluster::*;
pub use machines::*;

/// Decentralized server orchestration: scattered machines become one virtual data center.
///
/// raptiformica starts machines through pluggable compute back-ends (docker, vagrant, or your
/// own module), provisions them over SSH, and meshes them: a yggdrasil overlay on every node,
/// consul on that overlay, and the shared config in consul's KV, so that any node, even the last
/// survivor, can bootstrap new machines.
#[derive(Debug, Parser)]
#[command(name = "raptiformica", version, propagate_version = true, max_term_width = 100)]
#[command(
    after_help = "Config is layered: built-in modules < user modules (<cache-dir>/modules) < \
the mutable cache (<cache-dir>/mutable_config.json) < consul's KV. See `raptiformica config --help`."
)]
pub struct Cli {
    /// More output: -v streams the output of the commands run, -vv adds debug logs
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Where this machine keeps its state: config cache, user modules, instances, artifacts (a
    /// relative path is taken from the home dir, as the original did)
    #[arg(
        short,
        long,
        global = true,
        env = "RAPTIFORMICA_CACHE_DIR",
        value_name = "DIR",
        default_value = "~/.raptiformica.d",
        hide_default_value = false
    )]
    pub cache_dir: String,

    /// Folder holding the built-in modules (compute/, provisioning/, modules/; or the original's
    /// compute/, server/, platform/) [default: beside the binary, else /usr/etc/raptiformica]
    #[arg(long, global = true, env = "RAPTIFORMICA_INSTALL_DIR", value_name = "DIR")]
    pub install_dir: Option<PathBuf>,

    /// Where the node binaries (consul, yggdrasil) are kept [default: <cache-dir>/artifacts]
    #[arg(long, global = true, env = "RAPTIFORMICA_ARTIFACTS_DIR", value_name = "DIR")]
    pub artifacts_dir: Option<PathBuf>,

    /// Print data as JSON, for scripts
    #[arg(long, global = true)]
    pub json: bool,

    /// Output format: `-o json` is the same as --json
    #[arg(short, long, global = true, value_enum, default_value = "table")]
    pub output: OutputFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show or edit the effective config
    ///
    /// Without a subcommand, prints every key with its value and the layer it came from
    /// (--json prints the flat mapping). Keys may be given with or without the leading
    /// `raptiformica/`.
    #[command(args_conflicts_with_subcommands = true)]
    #[command(
        after_help = "Examples:\n  raptiformica config                        # every key, its value and the layer it came from\n  raptiformica config get compute/docker/headless/get_port\n  raptiformica config set meshnet/consul/servers 5"
    )]
    Config(ConfigArgs),

    /// Start new machines through a compute back-end
    ///
    /// Runs the compute type's `start_instance`, `get_hostname` and `get_port` commands in a
    /// fresh instance directory under <cache-dir>/var/machines/, then fires the
    /// `after_start_instance` hooks. A failed start is cleaned up; nothing is left half-created.
    #[command(after_help = "Examples:
  raptiformica spawn --compute-type docker --count 3   # a cluster of three containers
  raptiformica spawn --check-available                 # which back-ends work on this machine
  raptiformica spawn --compute-type docker --with-engine
                        # a machine that can spawn machines itself (root on this host: see README)
  raptiformica spawn --compute-type vagrant --with-engine
                        # the original's example: one VM spawns two containers inside itself")]
    Spawn(SpawnArgs),

    /// Provision an existing machine over SSH and make it a node
    ///
    /// Connects as root (the host key is pinned on first contact in <cache-dir>/known_hosts and
    /// checked on every later one), uploads this binary, the module folders, the artifacts
    /// (consul, yggdrasil) and the cached config, runs the server type's provisioning there,
    /// fires the `after_slave` hooks, then registers the node as a neighbour. Only what changed
    /// is uploaded: slaving the same machine again is safe and fast.
    #[command(
        after_help = "Examples:\n  raptiformica slave 192.0.2.10              # as root on port 22; the host key is pinned\n  raptiformica slave 192.0.2.10 -p 2222 --server-type headless --no-after-mesh\n  raptiformica slave ops@192.0.2.10 --sudo --from-member   # a member uploads: this host sends next to nothing"
    )]
    Slave(SlaveArgs),

    /// Open a shell on a machine, or run a command there
    ///
    /// MACHINE is an instance id (or its first characters) or a host; by default the first
    /// instance this host started. Uses the pinned host keys and this host's key.
    #[command(
        after_help = "Examples:\n  raptiformica ssh                           # a shell on the first instance this host started\n  raptiformica ssh 3f2a -- uptime            # a command on the instance whose id starts with 3f2a"
    )]
    Ssh(SshArgs),

    /// Join this node to the overlay and, from three known nodes on, to consensus (run on a node)
    ///
    /// Generates the node's yggdrasil keys on first use (they never leave the node), advertises
    /// its public key and overlay address in the shared config, renders yggdrasil's config from
    /// the shared config (links: the consul servers, which link with every node, and a few
    /// ring neighbours while fewer than two servers are up; admitted: only the cluster's keys) and
    /// starts it or changes its peers at run time. Once three nodes are known it renders and
    /// starts consul on the overlay address (the first 3 or 5 nodes as voting servers, the rest
    /// as clients), seeds consul's KV from <cache-dir>/mutable_config.json when the KV is empty,
    /// else caches the KV there. Then fires the `after_mesh` hooks. Slaving runs it for you.
    #[command(
        after_help = "Examples:\n  raptiformica mesh                          # on a node: (re)render and start yggdrasil and consul\n  raptiformica mesh --no-after-mesh --wait 60"
    )]
    Mesh(MeshArgs),

    /// Show the cluster's members (Node, Address, Status, Type, Build, Protocol, DC, Raft)
    ///
    /// On a node, asks the local consul agent. Elsewhere (the machine you slaved from), asks
    /// each known node in turn over SSH and says on stderr which one answered. --json prints
    /// a list of members.
    #[command(
        after_help = "Examples:\n  raptiformica members\n  raptiformica members -o json               # for scripts\n  raptiformica members --rejoin              # on a node, after an overlay outage"
    )]
    Members(MembersArgs),

    /// Manage the binaries a node needs (consul, yggdrasil), kept in <cache-dir>/artifacts
    #[command(after_help = "Examples:\n  raptiformica artifacts fetch\n  raptiformica artifacts list")]
    Artifacts {
        #[command(subcommand)]
        action: ArtifactsAction,
    },

    /// Remove every instance this host started
    ///
    /// Runs each instance's `clean_up_instance_command`, then removes its directory; then,
    /// on the workstation that built the cluster, the machines its nodes spawned on this
    /// host's engines. Machines another workstation holds (see `attach`) are kept unless
    /// --force. --purge-artifacts and --purge-modules (the original's flags) then remove the
    /// downloaded artifacts and the installed user modules too, as `clean --artifacts
    /// --modules` does.
    #[command(after_help = "Examples:
  raptiformica destroy
  raptiformica destroy --purge-artifacts --purge-modules   # and this host's downloads and modules
  raptiformica destroy --force                # and the cluster's machines other workstations hold here")]
    Destroy(DestroyArgs),

    /// Remove the instances that are gone (their `detect_stale_instance` fails)
    #[command(
        after_help = "Examples:\n  raptiformica prune                         # clean up the instances whose machine is gone"
    )]
    Prune,

    /// Fire a hook's handlers by hand (after_start_instance, after_slave, after_mesh, ...)
    #[command(
        after_help = "Examples:\n  raptiformica hook cluster_change           # run the cluster_change handlers here\n  raptiformica -v hook after_mesh            # and show their output"
    )]
    Hook {
        /// The hook's name
        name: String,
    },

    /// Forget this machine's cached cluster state; on a node, wipe it back to fresh
    ///
    /// On a workstation: removes the mutable config cache (use it when the cache is corrupt; it
    /// is rebuilt from the modules and the cluster's shared config on the next change);
    /// --artifacts and --modules remove the downloaded artifacts and the installed user modules
    /// too. On a node (as the original did): stops the agent, consul (which leaves the cluster
    /// first: the others see it `left`) and yggdrasil, and removes what slaving installed
    /// (/usr/etc/raptiformica, the links in /usr/local/bin, the systemd unit, the cache dir
    /// with the node's state); `slave` from a workstation makes it a node again.
    #[command(after_help = "Examples:
  raptiformica clean                        # on a workstation: a fresh config cache
  raptiformica clean --artifacts --modules  # and the downloads and user modules
  raptiformica ssh NODE -- raptiformica clean   # a node back to fresh; then: raptiformica slave HOST")]
    Clean(CleanArgs),

    /// Remove a machine that no longer answers from the cluster, from any workstation or node
    ///
    /// The member is forced out (the others see it `left`; a server leaves raft), its neighbour
    /// entry leaves the shared config, so no node dials it or links with it any more, and an
    /// instance this machine started for it is cleaned up (another machine's is left to its
    /// holder: `prune` there). From a workstation it runs on a node that answers, over SSH.
    /// Refused for a machine that answers unless --force, while the cluster has no leader, and
    /// where a voting server's removal would leave fewer alive servers than a quorum with no
    /// client to promote.
    #[command(
        after_help = "Examples:\n  raptiformica remove 192.0.2.10            # the machine slaved at that address\n  raptiformica remove 3f2a --force          # by id, though it still answers"
    )]
    Remove(RemoveArgs),

    /// Drive a cluster from this machine too (a second workstation), through one member
    ///
    /// Connects to the member HOST over SSH with your own key (ssh-agent, or ~/.ssh/id_*; its
    /// host key is pinned on first contact, or checked against --host-key), registers this
    /// cache dir as a workstation of the cluster (its key, which every node's agent authorizes,
    /// also on nodes that join later) and takes the cluster's shared config (its data, never
    /// its commands) and token. Then `members`, `config`, `spawn` (on this machine's engine),
    /// `ssh`, `ui` and `destroy` work from here; each workstation's machines record it as
    /// their holder, and `destroy` removes only this one's. `config unset
    /// raptiformica/workstations/NAME` revokes a workstation's key on every node.
    #[command(
        after_help = "Examples:\n  raptiformica attach 192.0.2.10             # as root, with your key or ssh-agent\n  raptiformica attach ops@192.0.2.10 --sudo -p 2222\n  raptiformica --cache-dir ~/.second attach 192.0.2.10 --host-key 'ssh-ed25519 AAAA...'"
    )]
    Attach(AttachArgs),

    /// Make this machine (not in the cluster yet) join it through a member
    ///
    /// Connects to the member HOST over SSH (your key or ssh-agent; its host key is pinned on
    /// first contact), authorizes the member's key for root here (sshd is started if it is not
    /// running) and hands it this machine's host key, then has the member slave this machine.
    /// No copy of the cluster's config is needed beforehand.
    #[command(
        after_help = "Examples:\n  raptiformica join 192.0.2.10                # on the new machine: a member slaves it\n  raptiformica join 192.0.2.10 -p 2222 --server-type headless\n  raptiformica join ops@192.0.2.10 --sudo --user ops    # sudo users on both sides, no root login"
    )]
    Join(JoinArgs),

    /// Set up (or re-create) a whole network from an inventory file
    ///
    /// INVENTORY is a JSON list (the original's format) or a TOML file of `[[host]]` tables,
    /// each with `dst` (required), `port` (default 22) and `via` (the `dst` of another entry
    /// to reach this host through, as an SSH jump). The whole file is checked before anything
    /// starts. Hosts are slaved N at a time; a summary table follows. Exit code 1 when any
    /// host failed.
    #[command(
        after_help = "Examples:\n  raptiformica deploy hosts.json             # [{\"dst\": \"192.0.2.10\"}, {\"dst\": \"10.0.0.2\", \"via\": \"192.0.2.10\"}]\n  raptiformica deploy hosts.toml --concurrent 10 --no-after-mesh"
    )]
    Deploy(DeployArgs),

    /// Install a user module, or remove one with --remove (the original's `install`)
    ///
    /// The same as `modules install SOURCE` and, with --remove, `modules uninstall NAME`.
    #[command(after_help = "Examples:
  raptiformica install ./my-module            # a local folder
  raptiformica install vdloo/raptiformica-map # a GitHub repository (user/repo), or any git URL
  raptiformica install my-module --remove")]
    Install(InstallArgs),

    /// Install, remove and list user modules (<cache-dir>/modules)
    #[command(
        after_help = "Examples:\n  raptiformica modules install vdloo/raptiformica-map\n  raptiformica modules list\n  raptiformica modules uninstall raptiformica-map"
    )]
    Modules {
        #[command(subcommand)]
        action: ModulesAction,
    },

    /// Fire and list the cluster's events (consul user events)
    ///
    /// An event runs the handlers of `platform/<platform>/events/<NAME>/<handler>/` (each a
    /// `predicate` and a `command`, as hooks) once on every node it reaches, in the order the
    /// cluster received them; the payload comes on the command's stdin, with
    /// RAPTIFORMICA_EVENT_NAME, RAPTIFORMICA_EVENT_ID and RAPTIFORMICA_EVENT_ORIGIN set.
    #[command(
        after_help = "Examples:\n  raptiformica event fire notify_cluster_change   # the original's trigger for cluster_change\n  raptiformica event fire deploy --server-type headless --payload @release.txt\n  raptiformica event list"
    )]
    Event {
        #[command(subcommand)]
        action: EventAction,
    },

    /// Replicated state machines: append to a log every node applies in the same order
    ///
    /// A module declares a machine as `state.<NAME>.apply` (reads one entry on stdin),
    /// `state.<NAME>.snapshot` (writes the whole state on stdout), `state.<NAME>.restore` (reads
    /// a snapshot on stdin) and `state.<NAME>.snapshot_every` (default 1000). The log lives in
    /// consul's KV; every node's agent applies each entry once, in index order.
    #[command(after_help = "Examples:\n  raptiformica state append kv 'set a 1'\n  raptiformica state status kv")]
    State {
        #[command(subcommand)]
        action: StateAction,
    },

    /// A live web map of the cluster: nodes, overlay links, events, the shared config
    ///
    /// Serves one page (nothing fetched from the internet) and a JSON API beside it
    /// (`/api/members`, `/api/overlay`, `/api/events`, `/api/config`, `/api/state`,
    /// `/api/stream`). It reaches the cluster as `members` does: on a node its own consul,
    /// elsewhere a tunnel to a member. Secrets (the gossip key, tokens, passwords) are masked.
    ///
    /// Every address needs the token, loopback included: `ui` makes a fresh one (or reads
    /// `--token-file`) and prints on stderr, once, a login URL
    /// (`http://ADDR:PORT/login?token=TOKEN`); opening it sets a session cookie (HttpOnly,
    /// SameSite=Strict) and shows the map. Scripts send `Authorization: Bearer TOKEN`. Without
    /// either a request gets 401. A request whose Host is not an IP address, `localhost` or an
    /// `--allow-host` name gets 421 (DNS rebinding), one from another site's page (Origin) 403.
    #[command(after_help = "Examples:
  raptiformica ui                      # then open the printed http://127.0.0.1:8420/login?token=...
  curl -H \"Authorization: Bearer $(cat map.token)\" http://127.0.0.1:8420/api/members
                                       # with `ui --token-file map.token` (a 0600 file)
  raptiformica ui --listen 0.0.0.0:8420 --token-file map.token --allow-host map.example.org
  raptiformica ui --login-url          # as root on a node: the login URL of its agent's map")]
    Ui(UiArgs),

    /// Save the cluster's state to a file, or bring it back into a cluster
    ///
    /// `save` keeps consul's own snapshot (the shared config, the state machines' logs and
    /// snapshots, everything in the KV; also the ACLs and the gossip key: keep the file safe).
    /// `restore` brings its KV back into the cluster this machine reaches, new or not, except
    /// what belongs to that cluster: its `raptiformica/meshnet/` section (neighbours, gossip key,
    /// consul and overlay settings), its ACL tokens, its agents' locks and its seeding marker.
    #[command(
        after_help = "Examples:\n  raptiformica snapshot save cluster.snap\n  raptiformica snapshot restore cluster.snap --yes"
    )]
    Snapshot {
        #[command(subcommand)]
        action: SnapshotAction,
    },

    /// Bake a provisioned machine image, so later spawns skip provisioning
    ///
    /// Starts a machine of the compute type, provisions it (artifacts and the server type's
    /// bootstrap) without meshing it, strips its identity (SSH host keys, overlay keys,
    /// consul data, secrets), stores it as the compute type's packaged image, and removes the
    /// machine. Later spawns use the image unless `spawn --no-package`; run `package` again
    /// after an upgrade. Prints the image's name.
    ///
    /// For docker the image is `raptiformica-packaged:<server type>`. `destroy` and `clean`
    /// keep it; remove it with `docker image rm raptiformica-packaged:<server type>`.
    #[command(
        after_help = "Examples:\n  raptiformica package --compute-type docker  # then spawns start from the baked image\n  raptiformica package --check-available     # the compute types that can bake one"
    )]
    Package(PackageArgs),

    /// Record the address other nodes should use to reach this node (run on a node)
    ///
    /// For a node behind NAT or a port forward: HOST and PORT replace the address it was
    /// slaved at in its neighbour entry (kept in <cache-dir>/advertised.json).
    #[command(
        after_help = "Examples:\n  raptiformica advertise 203.0.113.5 -p 2222   # on a node behind a port forward"
    )]
    Advertise(AdvertiseArgs),

    /// Add a machine that is already provisioned and meshed elsewhere as a neighbour of this
    /// node (run on a node), reading its identity over SSH
    #[command(
        after_help = "Examples:\n  raptiformica inject 192.0.2.20 -p 22        # on a node: add a machine meshed elsewhere"
    )]
    Inject(InjectArgs),

    /// Keep the cluster alive: the long-running agent (on nodes and on the spawning host)
    ///
    /// On a node (`mesh` starts it, and restarts it within seconds if it dies) it restarts
    /// yggdrasil and consul when they exit, rejoins lost peers, fires `cluster_change` once per
    /// membership change, evicts members failed past `agent/eviction_grace`, rebuilds consensus
    /// from the survivors when quorum is lost for good (keeping consul's data and the KV), and
    /// follows its consul role. On the host that spawned the cluster it watches the cluster
    /// through an SSH tunnel and enforces `agent/rules/min_servers`: it promotes a client, or
    /// spawns a replacement of the lost machine's compute type and prunes the dead one, and
    /// when the compute back-end says the lost servers are gone it asks the survivor to
    /// rebuild at once (`--recover`). `--status` tells what the agent did last.
    #[command(
        after_help = "Examples:\n  raptiformica agent --status                # what the agent did last\n  raptiformica agent --recover               # on a server, once the lost servers are gone for good"
    )]
    Agent(AgentArgs),

    /// The agent's keeper on a node (started by `mesh`; not for direct use)
    #[command(hide = true)]
    Keeper,

    /// Unpack a bundle slaving sends (a zstd-compressed tar on stdin) on a node (run by the
    /// slaver; not for direct use)
    #[command(hide = true)]
    Unpack {
        /// Where `/` of the bundle's paths is
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },

    /// Print shell completions, e.g. `raptiformica completions bash > /etc/bash_completion.d/raptiformica`
    #[command(
        after_help = "Examples:\n  raptiformica completions bash > /etc/bash_completion.d/raptiformica\n  raptiformica completions zsh > ~/.zfunc/_raptiformica"
    )]
    Completions {
        /// The shell to write completions for
        shell: clap_complete::Shell,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// The original's command line, command by command and flag by flag (its argparse table),
    /// parses here: scripts written for it keep working.
    #[test]
    fn every_command_and_flag_of_the_original_parses() {
        let steps = "--no-provision --no-assimilate --no-after-assimilate --no-after-mesh";
        for line in [
            format!("spawn {steps} --server-type headless --compute-type docker"),
            "spawn --check-available".into(),
            format!("slave 192.0.2.1 -p 2222 {steps} --server-type headless"),
            format!("deploy inv.json --server-type headless --concurrent 5 {steps} --modules a b"),
            "join 192.0.2.1 --port 22 --server-type headless".into(),
            "package --server-type headless --compute-type docker".into(),
            "package --check-available".into(),
            "prune".into(),
            "destroy --purge-artifacts --purge-modules".into(),
            "install vdloo/raptiformica-map".into(),
            "install vdloo/raptiformica-map --remove".into(),
            "install vdloo/raptiformica-map -r".into(),
            "inject 192.0.2.1 -p 22".into(),
            "members".into(),
            "members --rejoin".into(),
            "members -r".into(),
            "ssh --info-only".into(),
            "ssh --only-info".into(),
            "clean".into(),
            "advertise 192.0.2.1 --port 22".into(),
            "mesh --no-after-mesh".into(),
            "agent".into(),
            "hook cluster_change".into(),
            "-v --verbose --cache-dir .raptiformica.d members".into(),
            "-c .raptiformica.d members".into(),
        ] {
            let args = std::iter::once("raptiformica").chain(line.split_whitespace());
            if let Err(e) = Cli::try_parse_from(args) {
                panic!("`raptiformica {line}`: {e}");
            }
        }
        let cli = Cli::try_parse_from(["raptiformica", "deploy", "i.json", "--modules", "a", "b"]).unwrap();
        assert!(matches!(cli.command, Command::Deploy(d) if d.modules == ["a", "b"]));
    }

    /// Every command a user can see, with its path (`["config", "get"]`).
    fn visible(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, clap::Command)>) {
        for sub in cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            let mut p = path.clone();
            p.push(sub.get_name().to_string());
            out.push((p.clone(), sub.clone()));
            visible(sub, p, out);
        }
    }

    #[test]
    fn every_command_has_examples_and_each_parses_as_the_command_it_shows() {
        let mut all = Vec::new();
        visible(&Cli::command(), Vec::new(), &mut all);
        assert!(all.len() > 30, "{}", all.len());
        for (path, cmd) in all {
            let help = cmd.get_after_help().map(|h| h.to_string()).unwrap_or_default();
            let examples: Vec<&str> = help
                .lines()
                .skip_while(|l| !l.starts_with("Examples:"))
                .filter_map(|l| l.trim().strip_prefix("raptiformica "))
                .collect();
            assert!(!examples.is_empty(), "`{}` has no example", path.join(" "));
            for e in examples {
                let line = e.split(" # ").next().unwrap().split(" > ").next().unwrap();
                let words = shlex::split(line).unwrap_or_else(|| panic!("{e}"));
                let parsed = Cli::try_parse_from(std::iter::once("raptiformica".to_string()).chain(words.clone()));
                assert!(parsed.is_ok(), "`raptiformica {e}`: {}", parsed.err().unwrap());
                let mut rest = words.iter();
                assert!(
                    path.iter().all(|p| rest.any(|w| w == p)),
                    "`raptiformica {e}` is shown for `{}`",
                    path.join(" ")
                );
            }
        }
    }
}
