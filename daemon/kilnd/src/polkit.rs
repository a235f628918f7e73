//! Polkit authority: asks `org.freedesktop.PolicyKit1` on the system bus
//! whether the calling subject may perform an action. D-Bus callers are
//! checked as `system-bus-name` subjects (the message's sender, never our own
//! PID); socket callers as `unix-process` subjects from SO_PEERCRED.

use kiln_engine::EngineError;
use kiln_engine::auth::{Action, AuthFuture, Authority, Caller, Transport};
use std::collections::HashMap;
use zbus::Connection;
use zbus::Variant as Value;

pub struct PolkitAuthority {
    conn: Connection,
}

impl PolkitAuthority {
    pub fn new(conn: Connection) -> Self {
        PolkitAuthority { conn }
    }

    async fn check(&self, caller: &Caller, action: Action) -> Result<(), EngineError> {
        if caller.uid == Some(0) || caller.uid == Some(nix::unistd::geteuid().as_raw()) {
            return Ok(());
        }
        let mut details: HashMap<&str, Value<'_>> = HashMap::new();
        let kind = match (caller.transport, &caller.bus_name, caller.pid, caller.uid) {
            (Transport::Dbus, Some(name), _, _) => {
                details.insert("name", Value::from(name.as_str()));
                "system-bus-name"
            }
            (_, _, Some(pid), Some(uid)) => {
                details.insert("pid", Value::from(pid as u32));
                details.insert(
                    "start-time",
                    Value::from(process_start_time(pid).unwrap_or(0)),
                );
                details.insert("uid", Value::from(uid as i32));
                "unix-process"
            }
            _ => {
                return Err(EngineError::denied(
                    "caller credentials unknown (the process that connected has exited?); polkit cannot decide: connect again from the calling process",
                ));
            }
        };
        let subject = (kind, details);
        let no_details: HashMap<&str, &str> = HashMap::new();
        let reply = self
            .conn
            .call_method(
                Some("org.freedesktop.PolicyKit1"),
                "/org/freedesktop/PolicyKit1/Authority",
                Some("org.freedesktop.PolicyKit1.Authority"),
                "CheckAuthorization",
                &(subject, action.polkit_id(), no_details, 0u32, ""),
            )
            .await
            .map_err(|e| {
                EngineError::unavailable(format!(
                    "polkit is not reachable ({e}); install polkitd or set auth.backend = \"group\""
                ))
            })?;
        let (authorized, challenge, _): (bool, bool, HashMap<String, String>) = reply
            .body()
            .deserialize()
            .map_err(|e| EngineError::internal(format!("unexpected polkit reply: {e}")))?;
        if authorized {
            Ok(())
        } else {
            Err(EngineError::denied(format!(
                "not authorised for {} ({}){}; ask an administrator to add you to group kiln",
                action.polkit_id(),
                caller.describe(),
                if challenge {
                    ", authentication would be required"
                } else {
                    ""
                }
            )))
        }
    }
}

/// Field 22 of /proc/<pid>/stat: the start time polkit uses to pin a process.
fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Authority for PolkitAuthority {
    fn authorize<'a>(&'a self, caller: &'a Caller, action: Action) -> AuthFuture<'a> {
        Box::pin(self.check(caller, action))
    }
    fn name(&self) -> &'static str {
        "polkit"
    }
}
