//! The proxy's name resolution: bounded, and never through search domains.
//!
//! * **Bounded.** `getaddrinfo` blocks a thread of tokio's shared blocking pool
//!   for as long as the resolver takes, and a timeout around the future does not
//!   free that thread. A session looping over names that resolve slowly (its own
//!   authoritative server can stall every answer) could otherwise fill the pool
//!   that the worker's file I/O and session teardown need. Each lookup therefore
//!   holds a permit of a process-wide semaphore ([`GLOBAL_LOOKUPS`]) and of its
//!   session's ([`SESSION_LOOKUPS`]) *until the blocking call returns*, not until
//!   the caller gives up: a slow resolver costs at most [`GLOBAL_LOOKUPS`]
//!   threads in all and a session at most [`SESSION_LOOKUPS`]; waiting for a
//!   permit counts against the connect timeout.
//! * **Absolute names.** The name is resolved as `name.` (a fully qualified
//!   name). Without the trailing dot a resolver with search domains (Kubernetes
//!   pods get `ndots:5` and `<ns>.svc.cluster.local`) tries `pypi.org.<ns>.svc.
//!   cluster.local` first, so an in-cluster service or a wildcard record could
//!   answer for an allowed public name. The deny set would still refuse a
//!   private answer, but an operator CIDR entry lifting part of it must not be
//!   reachable through a name nobody listed. The price: glibc's `files`
//!   backend compares names literally, so a name only in `/etc/hosts` (e.g. a
//!   Kubernetes `hostAliases` entry) does not resolve as `name.`; such names
//!   belong in the policy's static `hosts` map, which is consulted first.

use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

/// Lookups in flight at once, over every session of the process.
pub const GLOBAL_LOOKUPS: usize = 16;
/// Lookups in flight at once for one session.
pub const SESSION_LOOKUPS: usize = 4;

fn global() -> &'static Arc<Semaphore> {
    static G: std::sync::OnceLock<Arc<Semaphore>> = std::sync::OnceLock::new();
    G.get_or_init(|| Arc::new(Semaphore::new(GLOBAL_LOOKUPS)))
}

/// The form handed to the resolver: `name` (already normalised, without a
/// trailing dot) made absolute.
pub fn absolute(name: &str) -> String {
    let bare = name.strip_suffix('.').unwrap_or(name);
    format!("{bare}.")
}

/// Why a lookup produced no address.
#[derive(Debug)]
pub(crate) enum LookupError {
    /// The resolver answered with an error (no such name, …).
    Failed(String),
    /// No answer (or no permit) within the timeout.
    TimedOut,
}

/// Resolves `name` (normalised, no trailing dot) as an absolute name within
/// `timeout`, holding a global and a session permit for the blocking call's
/// whole duration.
pub(crate) async fn lookup(
    session: &Arc<Semaphore>,
    name: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<IpAddr>, LookupError> {
    let query = absolute(name);
    let work = async {
        let s = session
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| LookupError::TimedOut)?;
        let g = global()
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| LookupError::TimedOut)?;
        let task = tokio::task::spawn_blocking(move || {
            // The permits live as long as the thread is busy.
            let _permits = (s, g);
            (query.as_str(), port)
                .to_socket_addrs()
                .map(|it| it.map(|a| a.ip()).collect::<Vec<_>>())
        });
        match task.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(LookupError::Failed(e.to_string())),
            Err(e) => Err(LookupError::Failed(e.to_string())),
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(LookupError::TimedOut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_resolved_absolute() {
        assert_eq!(absolute("pypi.org"), "pypi.org.");
        assert_eq!(absolute("pypi.org."), "pypi.org.");
        assert_eq!(absolute("localhost"), "localhost.");
    }

    /// The permits bound the blocking threads: with every session permit taken,
    /// a lookup waits (and times out) instead of starting another thread.
    #[tokio::test]
    async fn a_session_without_permits_times_out_without_resolving() {
        let s = Arc::new(Semaphore::new(SESSION_LOOKUPS));
        let _held = s.clone().acquire_many_owned(SESSION_LOOKUPS as u32).await;
        let r = lookup(&s, "localhost", 80, Duration::from_millis(50)).await;
        assert!(matches!(r, Err(LookupError::TimedOut)), "{r:?}");
    }
}
