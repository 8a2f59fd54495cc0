//! Who is on the other end of a connection, and who may be.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

/// The verified identity of a connected peer, as the OS reports it.
///
/// Backends fill in what their OS gives: uid, gid and pid from
/// `SO_PEERCRED`/`getpeereid` on Unix, the client process id and user SID
/// on Windows. `same_user` is computed by the backend when it accepts the
/// connection, by comparing the peer with the current process's user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// Effective user id (Unix).
    pub uid: Option<u32>,
    /// Effective group id (Unix).
    pub gid: Option<u32>,
    /// Process id, where the OS gives it.
    pub pid: Option<u32>,
    /// User SID as a string such as `S-1-5-21-...` (Windows).
    pub sid: Option<String>,
    /// Whether the peer runs as the same user as this process.
    pub same_user: bool,
}

impl PeerInfo {
    /// A peer known by its Unix credentials.
    pub fn unix(uid: u32, gid: u32, pid: Option<u32>, same_user: bool) -> Self {
        PeerInfo {
            uid: Some(uid),
            gid: Some(gid),
            pid,
            sid: None,
            same_user,
        }
    }

    /// A peer known by its Windows identity.
    pub fn windows(pid: Option<u32>, sid: Option<String>, same_user: bool) -> Self {
        PeerInfo {
            uid: None,
            gid: None,
            pid,
            sid,
            same_user,
        }
    }
}

impl fmt::Display for PeerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(pid) = self.pid {
            parts.push(format!("pid={pid}"));
        }
        if let Some(uid) = self.uid {
            parts.push(format!("uid={uid}"));
        }
        if let Some(gid) = self.gid {
            parts.push(format!("gid={gid}"));
        }
        if let Some(sid) = &self.sid {
            parts.push(format!("sid={sid}"));
        }
        if parts.is_empty() {
            parts.push("unknown".into());
        }
        write!(f, "[{}]", parts.join(" "))
    }
}

/// A custom check over a peer's identity.
pub type AuthCheck = Arc<dyn Fn(&PeerInfo) -> bool + Send + Sync>;

/// Which peers a server accepts. The default is [`AuthPolicy::SameUser`].
///
/// The policy is checked right after accept, before any byte from the peer
/// is read; a refused peer is closed and the refusal logged with its
/// identity.
///
/// # Examples
///
/// ```
/// use ipc_core::{AuthPolicy, PeerInfo};
///
/// let me = PeerInfo::unix(1000, 1000, Some(42), true);
/// let other = PeerInfo::unix(1001, 100, Some(43), false);
/// assert!(AuthPolicy::default().allows(&me));
/// assert!(!AuthPolicy::default().allows(&other));
/// assert!(AuthPolicy::gids([100]).allows(&other));
/// assert!(AuthPolicy::custom(|p| p.pid == Some(43)).allows(&other));
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum AuthPolicy {
    /// Only peers running as this process's user.
    #[default]
    SameUser,
    /// The same user, or any of these uids.
    Uids(BTreeSet<u32>),
    /// The same user, or any peer whose primary gid is one of these.
    Gids(BTreeSet<u32>),
    /// Anyone who can reach the endpoint (its file mode or ACL still applies).
    Any,
    /// A check of your own.
    Custom(AuthCheck),
}

impl AuthPolicy {
    /// The same user, or any of these uids.
    pub fn uids(uids: impl IntoIterator<Item = u32>) -> Self {
        AuthPolicy::Uids(uids.into_iter().collect())
    }

    /// The same user, or any of these gids.
    pub fn gids(gids: impl IntoIterator<Item = u32>) -> Self {
        AuthPolicy::Gids(gids.into_iter().collect())
    }

    /// A custom check.
    pub fn custom(check: impl Fn(&PeerInfo) -> bool + Send + Sync + 'static) -> Self {
        AuthPolicy::Custom(Arc::new(check))
    }

    /// Whether the policy admits this peer.
    pub fn allows(&self, peer: &PeerInfo) -> bool {
        match self {
            AuthPolicy::SameUser => peer.same_user,
            AuthPolicy::Uids(set) => peer.same_user || peer.uid.is_some_and(|u| set.contains(&u)),
            AuthPolicy::Gids(set) => peer.same_user || peer.gid.is_some_and(|g| set.contains(&g)),
            AuthPolicy::Any => true,
            AuthPolicy::Custom(check) => check(peer),
        }
    }
}

impl fmt::Debug for AuthPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthPolicy::SameUser => f.write_str("SameUser"),
            AuthPolicy::Uids(s) => f.debug_tuple("Uids").field(s).finish(),
            AuthPolicy::Gids(s) => f.debug_tuple("Gids").field(s).finish(),
            AuthPolicy::Any => f.write_str("Any"),
            AuthPolicy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl fmt::Display for AuthPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        let me = PeerInfo::unix(1000, 1000, Some(1), true);
        let other = PeerInfo::unix(2000, 50, None, false);
        let unknown = PeerInfo::default();
        assert!(AuthPolicy::SameUser.allows(&me));
        assert!(!AuthPolicy::SameUser.allows(&other));
        assert!(!AuthPolicy::SameUser.allows(&unknown));
        assert!(AuthPolicy::uids([2000]).allows(&other));
        assert!(AuthPolicy::uids([2000]).allows(&me));
        assert!(!AuthPolicy::uids([3000]).allows(&other));
        assert!(AuthPolicy::gids([50]).allows(&other));
        assert!(!AuthPolicy::gids([51]).allows(&other));
        assert!(AuthPolicy::Any.allows(&unknown));
        assert!(!AuthPolicy::custom(|p| p.uid == Some(1)).allows(&me));
        assert_eq!(other.to_string(), "[uid=2000 gid=50]");
    }
}
