//! Who is calling, and may they do this? Adapters build a `Caller` from
//! SO_PEERCRED (gRPC) or the D-Bus sender's credentials; the engine asks an
//! `Authority` before every state-changing call. Polkit lives in kilnd (it
//! needs the bus); the group authority here needs only the user database.

use crate::error::EngineError;
use std::future::Future;
use std::pin::Pin;

/// A privileged action; each maps to one polkit action id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    ManageDaemon,
    ManageModels,
    ManageJobs,
    ManageStorage,
    ManageBurst,
    /// Read what people put in: job details, vector contents, search.
    ReadData,
}

impl Action {
    pub fn polkit_id(self) -> &'static str {
        match self {
            Action::ManageDaemon => "org.kiln.manage-daemon",
            Action::ManageModels => "org.kiln.manage-models",
            Action::ManageJobs => "org.kiln.manage-jobs",
            Action::ManageStorage => "org.kiln.manage-storage",
            Action::ManageBurst => "org.kiln.manage-burst",
            Action::ReadData => "org.kiln.read-data",
        }
    }
}

/// How a call reached the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Dbus,
    /// A signal (SIGHUP) or the daemon itself.
    Internal,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Dbus => "dbus",
            Transport::Internal => "internal",
        }
    }
}

/// The credentials of whoever made a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub transport: Transport,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub pid: Option<i32>,
    /// D-Bus unique name (`:1.42`) for bus callers.
    pub bus_name: Option<String>,
}

impl Caller {
    pub fn internal() -> Self {
        Caller {
            transport: Transport::Internal,
            uid: None,
            gid: None,
            pid: None,
            bus_name: None,
        }
    }

    /// Short form for logs and the audit table.
    pub fn describe(&self) -> String {
        let mut s = self.transport.name().to_string();
        if let Some(u) = self.uid {
            s.push_str(&format!(" uid={u}"));
        }
        if let Some(p) = self.pid {
            s.push_str(&format!(" pid={p}"));
        }
        if let Some(n) = &self.bus_name {
            s.push_str(&format!(" sender={n}"));
        }
        s
    }
}

pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<(), EngineError>> + Send + 'a>>;

/// Decides whether a caller may perform an action.
pub trait Authority: Send + Sync {
    fn authorize<'a>(&'a self, caller: &'a Caller, action: Action) -> AuthFuture<'a>;
    fn name(&self) -> &'static str;
}

/// Allows root, the daemon's own user, and members of one group (primary or
/// supplementary). Used where polkit is not configured or not reachable.
pub struct GroupAuthority {
    group: String,
}

impl GroupAuthority {
    pub fn new(group: impl Into<String>) -> Self {
        GroupAuthority {
            group: group.into(),
        }
    }

    pub fn allows(&self, caller: &Caller) -> Result<(), EngineError> {
        if caller.transport == Transport::Internal {
            return Ok(());
        }
        let Some(uid) = caller.uid else {
            return Err(EngineError::denied(
                "caller credentials unknown (none were sent, or the process that connected has exited); connect again from the calling process over the Unix socket or the system bus",
            ));
        };
        if uid == 0 || uid == nix::unistd::geteuid().as_raw() {
            return Ok(());
        }
        let group = nix::unistd::Group::from_name(&self.group).ok().flatten();
        if let Some(g) = &group {
            if caller.gid == Some(g.gid.as_raw()) {
                return Ok(());
            }
            if let Ok(Some(user)) = nix::unistd::User::from_uid(uid.into())
                && (user.gid == g.gid || g.mem.contains(&user.name))
            {
                return Ok(());
            }
        }
        Err(EngineError::denied(format!(
            "uid {uid} may not do this: only root and members of group {:?} may{}; add the user with `usermod -aG {} USER`",
            self.group,
            if group.is_none() {
                " (the group does not exist on this machine)"
            } else {
                ""
            },
            self.group
        )))
    }
}

impl Authority for GroupAuthority {
    fn authorize<'a>(&'a self, caller: &'a Caller, _action: Action) -> AuthFuture<'a> {
        Box::pin(async move { self.allows(caller) })
    }
    fn name(&self) -> &'static str {
        "group"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, gid: u32) -> Caller {
        Caller {
            transport: Transport::Grpc,
            uid: Some(uid),
            gid: Some(gid),
            pid: Some(1),
            bus_name: None,
        }
    }

    #[test]
    fn root_and_self_are_allowed_strangers_are_not() {
        let a = GroupAuthority::new("kiln-no-such-group");
        assert!(a.allows(&caller(0, 0)).is_ok());
        let me = nix::unistd::geteuid().as_raw();
        assert!(a.allows(&caller(me, 0)).is_ok());
        let stranger = if me == 65534 { 65533 } else { 65534 };
        let e = a.allows(&caller(stranger, 65534)).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::PermissionDenied);
        assert!(e.message.contains("does not exist"), "{}", e.message);
    }

    #[test]
    fn group_gid_is_allowed() {
        // "root" group exists everywhere with gid 0; a caller whose gid is 0 passes.
        let a = GroupAuthority::new("root");
        let me = nix::unistd::geteuid().as_raw();
        let stranger = if me == 65534 { 65533 } else { 65534 };
        assert!(a.allows(&caller(stranger, 0)).is_ok());
        assert!(
            a.allows(&Caller {
                uid: None,
                ..caller(0, 0)
            })
            .is_err()
        );
    }
}
