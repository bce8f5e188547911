//! Who a contact with a machine logs in as: root, or a user who runs what needs root through
//! `sudo -n` (`slave user@host --sudo`, recorded in the node's entry as `ssh_user`).

use anyhow::bail;

/// Who a contact logs in as: root, or a user who runs what needs root through `sudo`
/// (NOPASSWD: a password is never asked or passed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub sudo: bool,
}

impl Default for Login {
    fn default() -> Self {
        Login {
            user: "root".into(),
            sudo: false,
        }
    }
}

impl Login {
    /// `user@host` as (the login, the host); a bare host is root's. `sudo`: the user runs what
    /// needs root through sudo (root never does).
    pub fn split(target: &str, sudo: bool) -> anyhow::Result<(Login, String)> {
        let Some((user, host)) = target.rsplit_once('@') else {
            return Ok((Login::default(), target.to_string()));
        };
        if crate::config::known::check_user(user).is_err() {
            bail!("`{user}` in `{target}` is no user name (1 to 32 letters, digits, `_`, `-`, `.`)");
        }
        Ok((
            Login {
                user: user.to_string(),
                sudo: sudo && user != "root",
            },
            host.to_string(),
        ))
    }

    /// [`Login::split`], where a user other than root must come with `sudo` (what runs there
    /// needs root); the error names the target and says to add --sudo (`where_`: "there", "on
    /// the member").
    pub fn split_for_root(target: &str, sudo: bool, where_: &str) -> anyhow::Result<(Login, String)> {
        let (login, host) = Self::split(target, sudo)?;
        if !login.is_root() && !sudo {
            bail!(
                "`{target}` logs in as {}: add --sudo to run what needs root through sudo {where_}",
                login.user
            );
        }
        Ok((login, host))
    }

    /// The login a neighbour entry records (`ssh_user`; root when it records none): a user
    /// other than root goes through sudo.
    pub fn recorded(user: Option<&str>) -> Login {
        match user {
            Some(u) if u != "root" => Login {
                user: u.to_string(),
                sudo: true,
            },
            _ => Login::default(),
        }
    }

    pub fn is_root(&self) -> bool {
        self.user == "root"
    }
}
