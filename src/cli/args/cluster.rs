//! The arguments of the commands that work on a running cluster: config, members, events,
//! state machines, the map, snapshots, modules, the agent.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum StateAction {
    /// Append an entry to the log of NAME; prints the entry's index
    ///
    /// Exit status 3 with --wait: appended (the index is printed) but not applied on every
    /// alive node within --timeout; the entry stays in the log, once.
    #[command(after_help = "Examples:\n  \
        raptiformica state append kv 'set a 1'\n  \
        raptiformica state append kv @changes.txt --each-line --wait\n  \
        raptiformica state append kv 'set a 1' --id order-42   # a retry with the same id appends nothing")]
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
        /// This append's id (letters, digits, `-`, `_`; at most 64): appending again with the
        /// same id appends nothing and prints the index the first one got. Chosen at random
        /// when not given
        #[arg(long, value_name = "ID")]
        id: Option<String>,
    },
    /// The log's index, its snapshot, and each node's applied index and lag
    #[command(
        after_help = "Examples:\n  raptiformica state status kv                # the log's index and each node's lag"
    )]
    Status { name: String },
}

#[derive(Debug, Subcommand)]
pub enum EventAction {
    /// Fire an event: to every node, one node (--node), or the nodes of a server type
    #[command(
        after_help = "Examples:\n  raptiformica event fire notify_cluster_change\n  raptiformica event fire reload --node 3f2a9c0d1e2b4a5f --payload 'nginx'"
    )]
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
    #[command(after_help = "Examples:\n  raptiformica event list")]
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
    #[command(
        after_help = "Examples:\n  raptiformica snapshot save cluster.snap     # a 0600 file: it holds the cluster's secrets"
    )]
    Save {
        /// Where to write it (replaced atomically)
        file: PathBuf,
    },
    /// Bring a saved snapshot's KV back into the cluster (asks first unless --yes)
    #[command(
        after_help = "Examples:\n  raptiformica snapshot restore cluster.snap\n  raptiformica snapshot restore cluster.snap --yes   # without asking"
    )]
    Restore {
        /// A file `snapshot save` wrote; anything else is refused before anything changes
        file: PathBuf,
        /// Do not ask for confirmation
        #[arg(long, short = 'y')]
        yes: bool,
    },
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
    #[command(
        after_help = "Examples:\n  raptiformica modules install ./my-module    # a local folder\n  raptiformica modules install vdloo/raptiformica-map   # a GitHub repository, or any git URL"
    )]
    Install {
        /// Git URL, `user/repo`, or a local folder
        source: String,
    },
    /// Remove an installed module and the keys it brought (a built-in value shows again)
    ///
    /// A key whose value was changed after the install is kept. The value another module
    /// (built-in or user) gives a removed key is written back.
    #[command(after_help = "Examples:\n  raptiformica modules uninstall raptiformica-map")]
    Uninstall {
        /// The module's folder name, as `modules list` shows it
        name: String,
    },
    /// List the installed modules with what they provide
    #[command(after_help = "Examples:\n  raptiformica modules list")]
    List,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Git URL, `user/repo`, or a local folder; with --remove, the module's name (or what it
    /// was installed from)
    pub source: String,

    /// Remove the module and the keys it brought instead
    #[arg(short, long)]
    pub remove: bool,
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
    #[command(
        after_help = "Examples:\n  raptiformica config get compute/docker/headless/get_port\n  raptiformica config get meshnet/neighbours          # every key below a section"
    )]
    Get {
        /// e.g. `compute/docker/headless/get_port`
        key: String,
    },
    /// Set a value in the mutable layer
    #[command(
        after_help = "Examples:\n  raptiformica config set agent/eviction_grace 60\n  raptiformica config set meshnet/consul/servers 5 --json-value"
    )]
    Set {
        key: String,
        /// Stored as a string, unless --json-value is given
        value: String,
        /// Parse VALUE as JSON (numbers, booleans, lists)
        #[arg(long)]
        json_value: bool,
    },
    /// Remove a key (or a whole section) from the mutable layer; a module's value shows again
    #[command(
        after_help = "Examples:\n  raptiformica config unset agent/eviction_grace   # the module's value shows again"
    )]
    Unset { key: String },
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
pub struct RemoveArgs {
    /// The node: its id (or the first characters of it), or the host it was slaved at
    /// (`host` or `host:port`)
    pub node: String,
    /// Remove it even though it answers (it keeps running, cut off from the cluster)
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// A member of the cluster (`user@host` with --sudo)
    pub host: String,
    /// The member's SSH port
    #[arg(short, long, default_value_t = 22)]
    pub port: u16,
    /// Log in as the user HOST names (`user@host`) and run what needs root through sudo
    /// (without a password: `user ALL=(ALL) NOPASSWD:ALL`)
    #[arg(long)]
    pub sudo: bool,
    /// The member's host key (`ssh-ed25519 AAAA...`), read there by someone you trust: pinned
    /// before the first contact instead of trusted on first use
    #[arg(long, value_name = "KEY")]
    pub host_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct MembersArgs {
    /// Make this node join every known neighbour again (after an overlay outage)
    #[arg(short, long)]
    pub rejoin: bool,
}

/// How `members` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}
