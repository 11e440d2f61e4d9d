//! Where a process finds a secret: a file (`--secret-file`, `--admin-secret-file`),
//! an environment variable, or a flag; never only argv, which `ps` shows to every
//! user of the machine.
//!
//! A secret file holds the secret on its first line (a trailing CR LF or LF is not
//! part of it). An empty first line is refused; a file that group or others may read
//! is used with a warning, since anyone who can read it can act as a member or an
//! admin.

use std::io::Read;
use std::path::Path;

/// The cluster secret's environment variable.
pub const SECRET_ENV: &str = "GTSTORE_SECRET";
/// The admin secret's environment variable.
pub const ADMIN_SECRET_ENV: &str = "GTSTORE_ADMIN_SECRET";
/// The client password's environment variable on a storage node.
pub const CLIENT_PASSWORD_ENV: &str = "GTSTORE_CLIENT_PASSWORD";
/// The client password's environment variable for clients (the CLI, gtstore-load).
pub const PASSWORD_ENV: &str = "GTSTORE_PASSWORD";
/// The most of a secret file that is read.
const MAX_FILE: u64 = 4096;

/// The secret on the first line of the file at `path`.
pub fn read_file(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {shown}: {e}"))?;
    warn_if_shared(&file, path);
    let mut bytes = Vec::new();
    file.take(MAX_FILE)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(format!("{shown}: the secret (its first line) is empty"));
    }
    String::from_utf8(line.to_vec()).map_err(|_| format!("{shown}: the secret is not UTF-8"))
}

#[cfg(unix)]
fn warn_if_shared(file: &std::fs::File, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = file.metadata() {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            log::warn!(
                "{} is readable by others (mode {:o}): chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_: &std::fs::File, _: &Path) {}

/// The environment variable `name`, if set and not empty.
pub fn from_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.is_empty())
}

/// The admin secret a client proves: the file if given, else `$GTSTORE_ADMIN_SECRET`,
/// else `$GTSTORE_SECRET` (the manager's admin secret defaults to the cluster
/// secret), else the built-in default (which only a manager on loopback with no
/// secret configured accepts).
pub fn admin_secret(file: Option<&Path>) -> Result<String, String> {
    if let Some(path) = file {
        return read_file(path);
    }
    Ok(from_env(ADMIN_SECRET_ENV)
        .or_else(|| from_env(SECRET_ENV))
        .unwrap_or_else(|| crate::DEFAULT_SECRET.to_string()))
}

/// The client password a client proves: the file if given, else
/// `$GTSTORE_PASSWORD`; `None` when neither is set (the nodes need none).
pub fn client_password(file: Option<&Path>) -> Result<Option<String>, String> {
    match file {
        Some(path) => read_file(path).map(Some),
        None => Ok(from_env(PASSWORD_ENV)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_gives_its_first_line() {
        let dir = std::env::temp_dir().join(format!("gtstore-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        for (content, want) in [
            (&b"abc\n"[..], Ok("abc")),
            (b"abc", Ok("abc")),
            (b"abc\r\nmore\n", Ok("abc")),
            (b"\nabc\n", Err(())),
            (b"", Err(())),
        ] {
            std::fs::write(&path, content).unwrap();
            let got = read_file(&path);
            assert_eq!(got.as_deref().map_err(|_| ()), want, "{content:?}");
        }
        assert!(read_file(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
