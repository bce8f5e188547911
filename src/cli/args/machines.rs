//! The arguments of the commands that start, reach or make machines: spawn, slave, join,
//! deploy, mesh, ssh, package, advertise, inject, clean, artifacts.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Also remove the downloaded artifacts (<cache-dir>/artifacts)
    #[arg(long, visible_alias = "purge-artifacts")]
    pub artifacts: bool,

    /// Also remove every installed user module (<cache-dir>/modules); a cluster's shared
    /// config keeps their keys (`modules uninstall` takes them out)
    #[arg(long, visible_alias = "purge-modules")]
    pub modules: bool,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Also remove the downloaded artifacts (<cache-dir>/artifacts)
    #[arg(long, visible_alias = "artifacts")]
    pub purge_artifacts: bool,

    /// Also remove every installed user module (<cache-dir>/modules); a cluster's shared
    /// config keeps their keys (`modules uninstall` takes them out)
    #[arg(long, visible_alias = "modules")]
    pub purge_modules: bool,

    /// Also the machines of the cluster this workstation does not hold, on this machine's
    /// engines: those another workstation started, and (from an attached workstation) those
    /// the nodes spawned
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// Address or name of a cluster member (`user@host` with --sudo)
    pub host: String,

    /// Reach the member as the user HOST names (`user@host`), who runs what needs root there
    /// through sudo (without a password)
    #[arg(long)]
    pub sudo: bool,

    /// The member logs in here as this user (who must have sudo without a password), not as
    /// root: for a machine that refuses root logins
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

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

    /// How long a host may take to answer SSH (a machine still booting), in seconds; one that
    /// refuses the connection (nothing listens on its port) is given up after 10 s
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub ssh_wait: u64,

    /// Modules to install first, as `modules install` takes them (a local folder, a git URL,
    /// `user/repo`): the original's `--modules`. Installed once a host answers, before any is
    /// slaved, so their server types may be named with --server-type
    #[arg(long, value_name = "SOURCE", num_args = 1..)]
    pub modules: Vec<String>,

    #[command(flatten)]
    pub steps: StepFlags,
}

#[derive(Debug, Args)]
pub struct PackageArgs {
    /// Compute back-end whose image to bake [default: the first available]
    #[arg(long, value_name = "TYPE")]
    pub compute_type: Option<String>,

    /// Server type to provision the image as [default: the first available]
    #[arg(long, value_name = "TYPE")]
    pub server_type: Option<String>,

    /// Only report which compute types can bake an image here (exit 1 if none; the original's
    /// flag)
    #[arg(long)]
    pub check_available: bool,
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

    /// Hand each new machine a compute engine of its own, so that it can spawn and heal the
    /// cluster by itself (docker: the host's engine, its socket and CLI; vagrant: a docker
    /// engine inside the VM, which then spawns containers inside itself). A container handed
    /// the host's engine is root on that host: hand it only to machines you trust as much as
    /// that host. Machines a machine with an engine spawns get one too
    #[arg(long)]
    pub with_engine: bool,

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

    /// Do not fire the `after_assimilate` hooks (the original's flag)
    #[arg(long)]
    pub no_after_assimilate: bool,

    /// Do not fire the `after_mesh` hooks on the nodes this command meshes (the original's flag)
    #[arg(long)]
    pub no_after_mesh: bool,
}

#[derive(Debug, Args)]
pub struct SlaveArgs {
    /// Address or name of the machine (`user@host` with --sudo)
    pub host: String,

    /// Log in as the user HOST names (`user@host`) and run what needs root through sudo
    /// (without a password: `user ALL=(ALL) NOPASSWD:ALL`); root login may stay disabled there
    #[arg(long)]
    pub sudo: bool,

    /// The user's sudo wants a password: ask it once (on the terminal, else one line on stdin;
    /// never on a command line or in a log) and give the user sudo without a password on that
    /// machine (`/etc/sudoers.d/raptiformica-USER`), which later contacts use
    #[arg(long)]
    pub ask_sudo_password: bool,

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

    /// A member of the cluster uploads and slaves it (its key is authorized there from here):
    /// the 22 MB a new machine takes come from the member, not over this host's uplink
    #[arg(long)]
    pub from_member: bool,

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
    #[command(
        after_help = "Examples:\n  raptiformica artifacts fetch               # consul and yggdrasil from Debian's mirror"
    )]
    Fetch,
    /// List the artifacts with their checksums, verifying each
    #[command(after_help = "Examples:\n  raptiformica artifacts list")]
    List,
}
