//! Who may open a pipe: the access policy and the security descriptor (SDDL)
//! built from it.

use ipc_core::{Error, Result};

use crate::sys::Sid;

/// Access that clients other than the owner get: read and write the pipe,
/// but not create instances of it (`FILE_GENERIC_READ | FILE_GENERIC_WRITE`
/// without `FILE_CREATE_PIPE_INSTANCE`), so they cannot serve under its name.
const CLIENT_RIGHTS: &str = "0x12019b";

/// Who may open a pipe besides its owner (the user the server runs as) and
/// `SYSTEM`, which always may.
///
/// Whoever the descriptor lets in, the server's [`ipc_core::AuthPolicy`]
/// still checks each peer after accept: pair [`PipeAccess::Sids`] or
/// [`PipeAccess::Everyone`] with a policy that admits those peers (for
/// example [`ipc_core::AuthPolicy::Any`] or a custom check on
/// [`ipc_core::PeerInfo::sid`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PipeAccess {
    /// Only the owner and `SYSTEM` (the default).
    #[default]
    OwnerOnly,
    /// The owner, `SYSTEM`, and these users or groups, as SID strings such as
    /// `S-1-5-32-545` (BUILTIN\Users).
    Sids(Vec<String>),
    /// Every local user (`Everyone`); remote clients stay rejected unless
    /// that is turned off too.
    Everyone,
}

/// The SDDL of the pipe's security descriptor: a protected DACL that grants
/// the owner and `SYSTEM` full control and the others of `access` read and
/// write.
pub(crate) fn sddl(owner: &Sid, access: &PipeAccess) -> Result<String> {
    let mut s = format!("D:P(A;;GA;;;{owner})(A;;GA;;;SY)");
    match access {
        PipeAccess::OwnerOnly => {}
        PipeAccess::Sids(sids) => {
            for sid in sids {
                // Parse and print back: only a canonical SID reaches the SDDL.
                let parsed = Sid::parse(sid)
                    .map_err(|e| Error::io(format!("PipeAccess::Sids: invalid SID {sid:?}"), e))?;
                s.push_str(&format!("(A;;{CLIENT_RIGHTS};;;{parsed})"));
            }
        }
        PipeAccess::Everyone => s.push_str(&format!("(A;;{CLIENT_RIGHTS};;;WD)")),
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_only_names_owner_and_system_only() {
        let me = crate::sys::current_user().unwrap();
        let s = sddl(&me, &PipeAccess::OwnerOnly).unwrap();
        assert_eq!(s, format!("D:P(A;;GA;;;{me})(A;;GA;;;SY)"));
    }

    #[test]
    fn extra_sids_get_read_write_without_new_instances() {
        let me = crate::sys::current_user().unwrap();
        let s = sddl(&me, &PipeAccess::Sids(vec!["S-1-5-32-545".into()])).unwrap();
        assert!(s.ends_with("(A;;0x12019b;;;S-1-5-32-545)"), "{s}");
        let s = sddl(&me, &PipeAccess::Everyone).unwrap();
        assert!(s.ends_with("(A;;0x12019b;;;WD)"), "{s}");
    }

    #[test]
    fn malformed_sids_are_refused_before_reaching_sddl() {
        let me = crate::sys::current_user().unwrap();
        for bad in [
            "",
            "WD",
            "S-1-",
            "S-1-5-)(A;;GA;;;WD",
            "s-1-5-32",
            "S-1-5--1",
        ] {
            let err = sddl(&me, &PipeAccess::Sids(vec![bad.into()]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("invalid SID"), "{bad:?}: {err}");
        }
    }
}
