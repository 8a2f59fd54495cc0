//! Address strings that users can type: `unix:/run/app.sock`, `unix:@name`,
//! `local:name`, `pipe:name`, `shm:name`, `tcp:127.0.0.1:7000`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

/// The forms of address this workspace understands, for error messages.
pub const ADDRESS_FORMS: &str =
    "one of unix:/path/to.sock, unix:@abstract-name, local:name, pipe:name, shm:name, tcp:127.0.0.1:7000";

/// Longest name accepted by `local:`, `pipe:`, `shm:` and `unix:@`.
pub const MAX_NAME_LEN: usize = 100;

/// Where a server listens and a client connects.
///
/// # Examples
///
/// ```
/// use ipc_core::Address;
///
/// let a: Address = "unix:/run/node/admin.sock".parse()?;
/// assert_eq!(a.to_string(), "unix:/run/node/admin.sock");
/// assert_eq!(a.scheme(), "unix");
///
/// let err = "http://localhost".parse::<Address>().unwrap_err();
/// assert!(err.to_string().contains("expected one of unix:"));
/// # Ok::<(), ipc_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// A Unix domain socket at a filesystem path.
    Unix(PathBuf),
    /// A Linux abstract-namespace Unix socket (`unix:@name`).
    UnixAbstract(String),
    /// The platform's default local endpoint: a socket under
    /// `$XDG_RUNTIME_DIR` (or the temp dir) on Unix, a named pipe on Windows.
    Local(String),
    /// A Windows named pipe, `\\.\pipe\<name>`.
    Pipe(String),
    /// Shared-memory rings, bootstrapped over the platform's local endpoint
    /// at `name` (a `local:`-style name, or a path on Unix).
    Shm(String),
    /// TCP, for leaving the machine; loopback only unless configured.
    Tcp(SocketAddr),
}

impl Address {
    /// The scheme, as typed before the colon.
    pub fn scheme(&self) -> &'static str {
        match self {
            Address::Unix(_) | Address::UnixAbstract(_) => "unix",
            Address::Local(_) => "local",
            Address::Pipe(_) => "pipe",
            Address::Shm(_) => "shm",
            Address::Tcp(_) => "tcp",
        }
    }

    /// The path a `local:name` address maps to on Unix: `$XDG_RUNTIME_DIR/name.sock`
    /// when that directory exists, otherwise `<temp dir>/name.sock`.
    pub fn local_socket_path(name: &str) -> PathBuf {
        let dir = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|d| d.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        dir.join(format!("{name}.sock"))
    }

    /// The Windows path of a named pipe: `\\.\pipe\<name>`.
    pub fn pipe_path(name: &str) -> String {
        format!(r"\\.\pipe\{name}")
    }
}

fn invalid(input: &str, reason: impl Into<String>, expected: &'static str) -> Error {
    Error::InvalidAddress {
        input: input.to_owned(),
        reason: reason.into(),
        expected,
    }
}

fn check_name(input: &str, name: &str, expected: &'static str) -> Result<()> {
    if name.is_empty() {
        return Err(invalid(input, "the name is empty", expected));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid(
            input,
            format!(
                "the name is {} bytes, the limit is {MAX_NAME_LEN}",
                name.len()
            ),
            expected,
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_control() || matches!(c, '/' | '\\' | ':'))
    {
        return Err(invalid(
            input,
            format!("the name contains the character {c:?}"),
            expected,
        ));
    }
    Ok(())
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self> {
        let Some((scheme, rest)) = input.split_once(':') else {
            let hint = if input.starts_with('/') {
                "it has no scheme (did you mean unix:<path>?)"
            } else {
                "it has no scheme"
            };
            return Err(invalid(input, hint, ADDRESS_FORMS));
        };
        match scheme {
            "unix" => {
                const EXPECTED: &str = "unix:/path/to.sock or unix:@abstract-name";
                if let Some(name) = rest.strip_prefix('@') {
                    if name.is_empty() {
                        return Err(invalid(input, "the abstract name is empty", EXPECTED));
                    }
                    if name.len() > MAX_NAME_LEN || name.contains('\0') {
                        return Err(invalid(
                            input,
                            format!("an abstract name must be 1-{MAX_NAME_LEN} bytes without NUL"),
                            EXPECTED,
                        ));
                    }
                    return Ok(Address::UnixAbstract(name.to_owned()));
                }
                if rest.is_empty() {
                    return Err(invalid(input, "the path is empty", EXPECTED));
                }
                if rest.contains('\0') {
                    return Err(invalid(input, "the path contains a NUL byte", EXPECTED));
                }
                if rest.ends_with('/') {
                    return Err(invalid(input, "the path names a directory", EXPECTED));
                }
                Ok(Address::Unix(PathBuf::from(rest)))
            }
            "local" => {
                check_name(input, rest, "local:name (letters, digits, '-', '_', '.')")?;
                Ok(Address::Local(rest.to_owned()))
            }
            "pipe" => {
                const EXPECTED: &str = r"pipe:name or pipe:\\.\pipe\name";
                let name = rest.strip_prefix(r"\\.\pipe\").unwrap_or(rest);
                check_name(input, name, EXPECTED)?;
                Ok(Address::Pipe(name.to_owned()))
            }
            "shm" => {
                const EXPECTED: &str = "shm:name or shm:/path/to.sock";
                if rest.starts_with('/') {
                    if rest.contains('\0') || rest.ends_with('/') {
                        return Err(invalid(input, "the path is not a file path", EXPECTED));
                    }
                } else {
                    check_name(input, rest, EXPECTED)?;
                }
                Ok(Address::Shm(rest.to_owned()))
            }
            "tcp" => {
                const EXPECTED: &str = "tcp:IP:PORT, for example tcp:127.0.0.1:7000";
                let addr = rest.parse::<SocketAddr>().map_err(|_| {
                    invalid(
                        input,
                        "the host:port part is not an IP address and port",
                        EXPECTED,
                    )
                })?;
                Ok(Address::Tcp(addr))
            }
            other => Err(invalid(
                input,
                format!("the scheme {other:?} is unknown"),
                ADDRESS_FORMS,
            )),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::UnixAbstract(n) => write!(f, "unix:@{n}"),
            Address::Local(n) => write!(f, "local:{n}"),
            Address::Pipe(n) => write!(f, "pipe:{n}"),
            Address::Shm(n) => write!(f, "shm:{n}"),
            Address::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

impl From<&Path> for Address {
    fn from(p: &Path) -> Self {
        Address::Unix(p.to_owned())
    }
}

impl TryFrom<&str> for Address {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in [
            "unix:/run/a.sock",
            "unix:rel/a.sock",
            "unix:@node-admin",
            "local:node",
            "pipe:node",
            "shm:fast",
            "shm:/tmp/fast.sock",
            "tcp:127.0.0.1:7000",
            "tcp:[::1]:7000",
        ] {
            let a: Address = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
        }
    }

    #[test]
    fn pipe_accepts_windows_form() {
        let a: Address = r"pipe:\\.\pipe\node".parse().unwrap();
        assert_eq!(a, Address::Pipe("node".into()));
        assert_eq!(Address::pipe_path("node"), r"\\.\pipe\node");
    }

    #[test]
    fn malformed_addresses_say_what_was_expected() {
        for (s, needle) in [
            ("", "no scheme"),
            ("/run/a.sock", "did you mean unix:"),
            ("unix:", "path is empty"),
            ("unix:@", "abstract name is empty"),
            ("unix:/tmp/", "directory"),
            ("local:", "name is empty"),
            ("local:a/b", "'/'"),
            ("pipe:", "name is empty"),
            ("tcp:localhost", "tcp:IP:PORT"),
            ("http://x", "unknown"),
        ] {
            let e = s.parse::<Address>().unwrap_err().to_string();
            assert!(e.contains(needle), "{s:?}: {e}");
            assert!(e.contains("expected"), "{s:?}: {e}");
        }
    }

    #[test]
    fn local_path_ends_in_sock() {
        let p = Address::local_socket_path("node");
        assert!(p.ends_with("node.sock"));
    }
}
