//! Client names are unique among live connections: a logon with a name an
//! open connection holds closes that older connection (`client_replaced`).
//!
//! Why: the journal de-duplicates a publisher's resends by its name, so two
//! live connections with one name would share (and corrupt) one sequence;
//! and a publisher that reconnects after a network failure must be able to
//! take over from its half-open predecessor without waiting for its
//! heartbeat timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::outbound::ConnShared;

/// The live connections by client name.
#[derive(Debug, Default)]
pub struct NameRegistry {
    names: Mutex<HashMap<Box<str>, Weak<ConnShared>>>,
}

impl NameRegistry {
    /// Records `conn` under `name`; returns the connection that held the
    /// name before (still open), which the caller closes.
    pub fn claim(&self, name: &str, conn: &Arc<ConnShared>) -> Option<Arc<ConnShared>> {
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        let old = names.insert(name.into(), Arc::downgrade(conn));
        old.and_then(|old| old.upgrade())
            .filter(|old| old.id != conn.id && !old.is_closed())
    }

    /// Forgets `name` if connection `conn_id` still holds it.
    pub fn release(&self, name: &str, conn_id: u64) {
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        let holder = names.get(name).map(|weak| weak.upgrade().map(|c| c.id));
        match holder {
            Some(Some(id)) if id != conn_id => {}
            Some(_) => {
                names.remove(name);
            }
            None => {}
        }
    }
}
