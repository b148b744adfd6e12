//! The API's bearer token: from the configuration, or generated at first start and kept in
//! the state directory, so the API is never open by default.
//!
//! The state directory is the first of: `--state-dir`, `[server] state_dir`, systemd's
//! `$STATE_DIRECTORY`, `/var/lib/shardcast` when running as root, and
//! `$XDG_STATE_HOME/shardcast` (or `~/.local/state/shardcast`) otherwise.

use std::path::{Path, PathBuf};

/// The file under the state directory that holds a generated token.
pub const TOKEN_FILE: &str = "api-token";
/// The file under the state directory that holds the key the HLS proxy signs its URLs with
/// (kept, so the URLs players hold stay good across restarts and upgrades).
pub const PROXY_KEY_FILE: &str = "proxy-key";

/// Where state is kept, given the command line's and the configuration's choices.
pub fn state_dir(cli: Option<&Path>, configured: Option<&Path>) -> PathBuf {
    if let Some(dir) = cli.or(configured) {
        return dir.to_path_buf();
    }
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd may list several, separated by colons; the first is ours.
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        return PathBuf::from(first);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/shardcast");
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("shardcast")
}

/// Where the token came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `[api] token` in the configuration.
    Configured,
    /// Read from the state directory, generated at an earlier start.
    Stored(PathBuf),
    /// Generated now and stored there.
    Generated(PathBuf),
}

/// Why no API token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The stored file holds something else.
    #[error("{} does not hold a token (16 to 256 printable characters): remove it to have one generated", .0.display())]
    NotAToken(PathBuf),
    /// The stored file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The token file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The system gave no randomness.
    #[error("no randomness for an API token: {0}")]
    Randomness(getrandom::Error),
    /// The state directory cannot be made.
    #[error("cannot create the state directory {}: {source}", path.display())]
    StateDirectory {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The new token cannot be stored.
    #[error("cannot store the API token in {}: {source}", path.display())]
    Store {
        /// The token file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The configured token, or the stored one, or a new one (stored with mode 0600).
pub fn load_or_generate(
    configured: Option<&str>,
    state_dir: &Path,
) -> Result<(String, Origin), TokenError> {
    if let Some(token) = configured {
        return Ok((token.to_string(), Origin::Configured));
    }
    stored_or_new(state_dir, TOKEN_FILE)
}

/// The secret kept in `file` under `state_dir`, or a new one (24 random bytes in hex, stored
/// there with mode 0600): the API token, the key that signs the HLS proxy's URLs.
pub fn stored_or_new(state_dir: &Path, file: &str) -> Result<(String, Origin), TokenError> {
    let path = state_dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) if crate::config::valid_api_token(text.trim()) => {
            return Ok((text.trim().to_string(), Origin::Stored(path)))
        }
        Ok(_) => return Err(TokenError::NotAToken(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(TokenError::Read { path, source }),
    }
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(TokenError::Randomness)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(state_dir).map_err(|source| TokenError::StateDirectory {
        path: state_dir.to_owned(),
        source,
    })?;
    if let Err(source) = write_private(&path, &token) {
        return Err(TokenError::Store { path, source });
    }
    Ok((token, Origin::Generated(path)))
}

fn write_private(path: &Path, token: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // Created 0600 before the token is in it: the atomic write keeps an existing file's mode.
    if !path.exists() {
        std::fs::write(path, "")?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    crate::files::write_atomically(path, format!("{token}\n").as_bytes())
}

/// Compare a presented token with the expected one in time that does not depend on where
/// they first differ (only on whether their lengths do).
pub fn matches(presented: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    presented.as_bytes().ct_eq(expected.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_token_is_generated_once_kept_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("shardcast-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (first, origin) = load_or_generate(None, &dir).unwrap();
        assert_eq!(origin, Origin::Generated(dir.join(TOKEN_FILE)));
        assert!(crate::config::valid_api_token(&first));
        let mode = std::fs::metadata(dir.join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (second, origin) = load_or_generate(None, &dir).unwrap();
        assert_eq!(
            (second.as_str(), origin),
            (first.as_str(), Origin::Stored(dir.join(TOKEN_FILE)))
        );
        let (configured, origin) = load_or_generate(Some("from-the-config-file"), &dir).unwrap();
        assert_eq!(
            (configured.as_str(), origin),
            ("from-the-config-file", Origin::Configured)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(matches("0123456789abcdef", "0123456789abcdef"));
        assert!(!matches("0123456789abcdeF", "0123456789abcdef"));
        assert!(!matches("0123456789abcdef0", "0123456789abcdef"));
        assert!(!matches("", "0123456789abcdef"));
    }
}
