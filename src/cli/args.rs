//! The command line, clap derive only. Arguments become a [`Context`](crate::config::context::Context)
//! and per-command option structs; nothing here does work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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

    /// Where this machine keeps its state: config cache, user modules, instances, artifacts
    #[arg(
        long,
        global = true,
        env = "RAPTIFORMICA_CACHE_DIR",
        value_name = "DIR",
        default_value = "~/.raptiformica.d",
        hide_default_value = false
    )]
    pub cache_dir: String,

    /// Folder holding the built-in modules (compute/, provisioning/, modules/) [default: beside
    /// the binary, else /usr/etc/raptiformica]
    #[arg(long, global = true, env = "RAPTIFORMICA_INSTALL_DIR", value_name = "DIR")]
    pub install_dir: Option<PathBuf>,

    /// Where the node binaries (consul, yggdrasil) are kept [default: <cache-dir>/artifacts]
    #[arg(long, global = true, env = "RAPTIFORMICA_ARTIFACTS_DIR", value_name = "DIR")]
    pub artifacts_dir: Option<PathBuf>,

    /// Print data as JSON, for scripts
    #[arg(long, global = true)]
    pub json: bool,

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
    Config(ConfigArgs),

    /// Start new machines through a compute back-end
    ///
    /// Runs the compute type's `start_instance`, `get_hostname` and `get_port` commands in a
    /// fresh instance directory under <cache-dir>/var/machines/, then fires the
    /// `after_start_instance` hooks. A failed start is cleaned up; nothing is left half-created.
    Spawn(SpawnArgs),

    /// Provision an existing machine over SSH and make it a node
    ///
    /// Connects as root (the host key is pinned on first contact in <cache-dir>/known_hosts and
    /// checked on every later one), uploads this binary, the module folders, the artifacts
    /// (consul, yggdrasil) and the cached config, runs the server type's provisioning there,
    /// fires the `after_slave` hooks, then registers the node as a neighbour. Only what changed
    /// is uploaded: slaving the same machine again is safe and fast.
    Slave(SlaveArgs),

    /// Open a shell on a machine, or run a command there
    ///
    /// MACHINE is an instance id (or its first characters) or a host; by default the first
    /// instance this host started. Uses the pinned host keys and this host's key.
    Ssh(SshArgs),

    /// Join this node to the overlay and, from three known nodes on, to consensus (run on a node)
    ///
    /// Generates the node's yggdrasil keys on first use (they never leave the node), advertises
    /// its public key and overlay address in the shared config, renders yggdrasil's config from
    /// the shared config (peers: every other neighbour; admitted: only the cluster's keys) and
    /// starts it or changes its peers at run time. Once three nodes are known it renders and
    /// starts consul on the overlay address (the first 3 or 5 nodes as voting servers, the rest
    /// as clients), seeds consul's KV from <cache-dir>/mutable_config.json when the KV is empty,
    /// else caches the KV there. Then fires the `after_mesh` hooks. Slaving runs it for you.
    Mesh(MeshArgs),

    /// Show the cluster's members (Node, Address, Status, Type, Build, Protocol, DC, Raft)
    ///
    /// On a node, asks the local consul agent. Elsewhere (the machine you slaved from), asks
    /// each known node in turn over SSH and says on stderr which one answered. --json prints
    /// a list of members.
    Members(MembersArgs),

    /// Manage the binaries a node needs (consul, yggdrasil), kept in <cache-dir>/artifacts
    Artifacts {
        #[command(subcommand)]
        action: ArtifactsAction,
    },

    /// Remove every instance this host started
    ///
    /// Runs each instance's `clean_up_instance_command`, then removes its directory.
    Destroy,

    /// Remove the instances that are gone (their `detect_stale_instance` fails)
    Prune,

    /// Fire a hook's handlers by hand (after_start_instance, after_slave, after_mesh, ...)
    Hook {
        /// The hook's name
        name: String,
    },

    /// Forget this machine's cached cluster state (the mutable config cache)
    ///
    /// Use it when the cache is corrupt; it is rebuilt from the modules (and the cluster's
    /// shared config) on the next change. --artifacts and --modules remove the downloaded
    /// artifacts and the installed user modules too.
    Clean(CleanArgs),

    /// Make this machine (not in the cluster yet) join it through a member
    ///
    /// Connects to the member HOST over SSH (your key or ssh-agent; its host key is pinned on
    /// first contact), authorizes the member's key for root here (sshd is started if it is not
    /// running) and hands it this machine's host key, then has the member slave this machine.
    /// No copy of the cluster's config is needed beforehand.
    Join(JoinArgs),

    /// Set up (or re-create) a whole network from an inventory file
    ///
    /// INVENTORY is a JSON list (the original's format) or a TOML file of `[[host]]` tables,
    /// each with `dst` (required), `port` (default 22) and `via` (the `dst` of another entry
    /// to reach this host through, as an SSH jump). The whole file is checked before anything
    /// starts. Hosts are slaved N at a time; a summary table follows. Exit code 1 when any
    /// host failed.
    Deploy(DeployArgs),

    /// Install, remove and list user modules (<cache-dir>/modules)
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
    Package(PackageArgs),

    /// Record the address other nodes should use to reach this node (run on a node)
    ///
    /// For a node behind NAT or a port forward: HOST and PORT replace the address it was
    /// slaved at in its neighbour entry (kept in <cache-dir>/advertised.json).
    Advertise(AdvertiseArgs),

    /// Add a machine that is already provisioned and meshed elsewhere as a neighbour of this
    /// node (run on a node), reading its identity over SSH
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
    Agent(AgentArgs),

    /// The agent's keeper on a node (started by `mesh`; not for direct use)
    #[command(hide = true)]
    Keeper,

    /// Print shell completions, e.g. `raptiformica completions bash > /etc/bash_completion.d/raptiformica`
    Completions {
        /// The shell to write completions for
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum StateAction {
    /// Append an entry to the log of NAME; prints the entry's index
    Append {
        name: String,
        /// The entry: text, `@FILE`, or `-` for stdin (at most 360 KB)
        entry: String,
        /// Each line of ENTRY (of the file, of stdin) is an entry of its own, appended in
        /// order, many per transaction; prints the index of the last
        #[arg(long)]
        each_line: bool,
        /// Return once every alive node has applied it (at most --timeout seconds)
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds
        #[arg(long, value_name = "SECONDS", default_value_t = 60)]
        timeout: u64,
    },
    /// The log's index, its snapshot, and each node's applied index and lag
    Status { name: String },
}

#[derive(Debug, Subcommand)]
pub enum EventAction {
    /// Fire an event: to every node, one node (--node), or the nodes of a server type
    Fire {
        /// Letters, digits, `-`, `_` and `.`
        name: String,
        /// Only the node with this id (as `members` shows it)
        #[arg(long, value_name = "ID")]
        node: Option<String>,
        /// Only the nodes slaved as this server type
        #[arg(long, value_name = "TYPE")]
        server_type: Option<String>,
        /// What the handlers read on stdin: text, `@FILE`, or `-` for our stdin (consul carries
        /// a few hundred bytes; put bigger data in the shared config and send its key)
        #[arg(long, value_name = "TEXT|@FILE|-")]
        payload: Option<String>,
    },
    /// The recent events the cluster carried (consul keeps the last 256 per node)
    List,
}

#[derive(Debug, Args)]
pub struct UiArgs {
    /// Where to listen
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8420")]
    pub listen: std::net::SocketAddr,
    /// The token (the file's first line, 16 characters or more; the file readable by its
    /// owner only) instead of a fresh one
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// A host name the map also answers for (besides IP addresses and localhost), e.g. the
    /// name of a reverse proxy in front of it; repeatable
    #[arg(long, value_name = "NAME")]
    pub allow_host: Vec<String>,
    /// Print the login URL of the map this node's agent serves (`raptiformica/agent/ui_listen`;
    /// the token in <cache-dir>/ui_token, readable by root only) and exit
    #[arg(long, conflicts_with_all = ["listen", "token_file", "allow_host"])]
    pub login_url: bool,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotAction {
    /// Save consul's snapshot of the cluster to FILE (0600), through any member
    Save {
        /// Where to write it (replaced atomically)
        file: PathBuf,
    },
    /// Bring a saved snapshot's KV back into the cluster (asks first unless --yes)
    Restore {
        /// A file `snapshot save` wrote; anything else is refused before anything changes
        file: PathBuf,
        /// Do not ask for confirmation
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Also remove the downloaded artifacts (<cache-dir>/artifacts)
    #[arg(long)]
    pub artifacts: bool,

    /// Also remove every installed user module (<cache-dir>/modules); a cluster's shared
    /// config keeps their keys (`modules uninstall` takes them out)
    #[arg(long)]
    pub modules: bool,
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// Address or name of a cluster member
    pub host: String,

    /// The member's SSH port
    #[arg(short, long, default_value_t = 22)]
    pub port: u16,

    /// Server type to provision this machine as [default: the member's default]
    #[arg(long, value_name = "TYPE")]
    pub server_type: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The inventory: a JSON list of {dst, port, via} or a TOML file of [[host]] tables
    pub inventory: PathBuf,

    /// How many hosts are slaved at once
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrent: u32,

    /// Server type to provision the hosts as [default: the first one]
    #[arg(long, value_name = "TYPE")]
    pub server_type: Option<String>,

    /// Upload but do not run the server type's provisioning
    #[arg(long)]
    pub no_provision: bool,

    /// How long a host may take to answer SSH (a machine still booting), in seconds; one that
    /// refuses the connection (nothing listens on its port) is given up after 10 s
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub ssh_wait: u64,
}

#[derive(Debug, Subcommand)]
pub enum ModulesAction {
    /// Install a module: a git URL, `user/repo` (a GitHub repository), or a local folder
    ///
    /// The module goes to <cache-dir>/modules/<name> (the folder's or repository's last path
    /// part, without `.git`), replacing an earlier install of that name. Every module file in
    /// it must parse (an error names the file and line, and nothing is installed). Its server
    /// types, compute types and hooks are offered at once, and its keys go to the shared
    /// config so that every node has them (from a machine that is not a node but knows nodes,
    /// through one of them over SSH). Machines slaved later get the module's folder too.
    Install {
        /// Git URL, `user/repo`, or a local folder
        source: String,
    },
    /// Remove an installed module and the keys it brought (a built-in value shows again)
    ///
    /// A key whose value was changed after the install is kept. The value another module
    /// (built-in or user) gives a removed key is written back.
    Uninstall {
        /// The module's folder name, as `modules list` shows it
        name: String,
    },
    /// List the installed modules with what they provide
    List,
}

#[derive(Debug, Args)]
pub struct PackageArgs {
    /// Compute back-end whose image to bake [default: the first available]
    #[arg(long, value_name = "TYPE")]
    pub compute_type: Option<String>,

    /// Server type to provision the image as [default: the first available]
    #[arg(long, value_name = "TYPE")]
    pub server_type: Option<String>,
}

#[derive(Debug, Args)]
pub struct AdvertiseArgs {
    /// The address other nodes should dial
    pub host: String,

    /// The SSH port other nodes should use
    #[arg(short, long, default_value_t = 22)]
    pub port: u16,
}

#[derive(Debug, Args)]
pub struct InjectArgs {
    /// Address or name of the machine
    pub host: String,

    /// Its SSH port
    #[arg(short, long, default_value_t = 22)]
    pub port: u16,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// With --json: each key as {"value", "layer", "file"} instead of the plain mapping
    #[arg(long)]
    pub origins: bool,

    /// Print secrets (the gossip key, tokens) instead of `<secret>`
    #[arg(long, global = true)]
    pub show_secrets: bool,

    #[command(subcommand)]
    pub action: Option<ConfigAction>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print one value, or every key below a section
    Get {
        /// e.g. `compute/docker/headless/get_port`
        key: String,
    },
    /// Set a value in the mutable layer
    Set {
        key: String,
        /// Stored as a string, unless --json-value is given
        value: String,
        /// Parse VALUE as JSON (numbers, booleans, lists)
        #[arg(long)]
        json_value: bool,
    },
    /// Remove a key (or a whole section) from the mutable layer; a module's value shows again
    Unset { key: String },
}

#[derive(Debug, Args)]
pub struct SpawnArgs {
    /// Compute back-end to start the machine with [default: the first available]
    #[arg(long, value_name = "TYPE")]
    pub compute_type: Option<String>,

    /// Server type to provision it as [default: the first available]
    #[arg(long, value_name = "TYPE")]
    pub server_type: Option<String>,

    /// How many machines to start
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub count: u32,

    /// Only report which compute types are available on this host (exit 1 if none)
    #[arg(long)]
    pub check_available: bool,

    /// How long a new machine may take to answer SSH, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub ssh_wait: u64,

    /// Only start the machines; slave them later with `raptiformica slave`
    #[arg(long, conflicts_with_all = ["no_provision", "no_assimilate"])]
    pub no_slave: bool,

    /// Start from the plain base image even when a packaged one exists (`raptiformica package`)
    #[arg(long)]
    pub no_package: bool,

    #[command(flatten)]
    pub steps: StepFlags,
}

/// Steps of slaving that can be skipped.
#[derive(Debug, Args, Clone, Copy)]
pub struct StepFlags {
    /// Upload but do not run the server type's provisioning
    #[arg(long)]
    pub no_provision: bool,

    /// Do not join the machine to the cluster (no neighbour registration, no mesh)
    #[arg(long)]
    pub no_assimilate: bool,
}

#[derive(Debug, Args)]
pub struct SlaveArgs {
    /// Address or name of the machine
    pub host: String,

    /// Its SSH port
    #[arg(short, long, default_value_t = 22)]
    pub port: u16,

    /// Server type to provision it as [default: the first one]
    #[arg(long, value_name = "TYPE")]
    pub server_type: Option<String>,

    /// Reach the machine through this jump host (`host` or `host:port`, `[v6]:port`; repeat
    /// for a chain, outermost first). Recorded, so every later contact takes the same way
    #[arg(long, value_name = "HOST[:PORT]")]
    pub via: Vec<String>,

    /// The machine's host key (`ssh-ed25519 AAAA...`), read there by someone you trust: pinned
    /// before the first contact instead of trusted on first use (`join` passes it)
    #[arg(long, value_name = "KEY")]
    pub host_key: Option<String>,

    #[command(flatten)]
    pub steps: StepFlags,
}

#[derive(Debug, Args)]
pub struct MeshArgs {
    /// Merge these shared config entries first: a file (or `-` for stdin) holding a flat JSON
    /// mapping of `raptiformica/...` keys, e.g. new neighbours handed over by the slaver
    #[arg(long, value_name = "FILE")]
    pub with_config: Option<PathBuf>,

    /// How long to wait for consul to elect a leader before leaving the KV sync for later
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub wait: u64,

    /// Do not fire the `after_mesh` hooks
    #[arg(long)]
    pub no_after_mesh: bool,

    /// Do not start the agent (`raptiformica agent`, kept running by its keeper)
    #[arg(long)]
    pub no_agent: bool,

    /// Only make sure the overlay keys exist and print this node's overlay identity as JSON
    #[arg(long, conflicts_with_all = ["with_config", "no_after_mesh", "no_agent"])]
    pub identity_only: bool,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Print what the agent did last (restarts, evictions, promotions, recoveries) and exit
    #[arg(long)]
    pub status: bool,

    /// On a server node of a cluster that lost quorum: rebuild consensus now from the servers
    /// still alive (outage recovery with raft/peers.json; the KV is kept). Use it only when the
    /// lost servers are gone for good: a node that is merely cut off would form a second
    /// cluster. Without it the agent waits `agent/recovery_grace`; the workstation agent asks
    /// for it once the compute back-end confirms the lost machines are gone
    #[arg(long, conflicts_with = "status")]
    pub recover: bool,
}

#[derive(Debug, Args)]
pub struct MembersArgs {
    /// Make this node join every known neighbour again (after an overlay outage)
    #[arg(short, long)]
    pub rejoin: bool,

    /// Output format (`-o json` is the same as --json)
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

/// How `members` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct SshArgs {
    /// Instance id (or a prefix of it) or host [default: the first instance]
    pub machine: Option<String>,

    /// Print the ssh command line instead of running it
    #[arg(long, alias = "only-info")]
    pub info_only: bool,

    /// Command to run there instead of a shell (after `--`)
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ArtifactsAction {
    /// Download consul (Debian bullseye) and yggdrasil (bookworm) and record their checksums
    Fetch,
    /// List the artifacts with their checksums, verifying each
    List,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
