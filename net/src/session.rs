//! What the service keeps for one connection while it lives: its authentication. The transport
//! holds it and hands it with every request of the connection; it does not know what is in it.
//!
//! A connection is *admitted* once the service says so ([`Session::admit`]), or at once when
//! its peer proved itself with a certificate the handshake verified. With
//! `EndpointConfig::admit_timeout` set, a connection not admitted that long after it was
//! accepted is closed with `codes::AUTHENTICATION_TIMEOUT`, so a client that never
//! authenticates holds a connection slot for a bounded time only.

use std::any::Any;
use std::cell::{Cell, RefCell};

/// Per-connection state shared by the requests of one connection (single-threaded: a
/// connection lives on one shard).
#[derive(Default)]
pub struct Session {
    state: RefCell<Option<Box<dyn Any>>>,
    admitted: Cell<bool>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("admitted", &self.admitted.get())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The connection may stay past the admission deadline.
    pub fn admit(&self) {
        self.admitted.set(true);
    }

    pub fn is_admitted(&self) -> bool {
        self.admitted.get()
    }

    /// Runs `f` on the service's state of type `T`, made with `T::default()` on first use.
    /// Never hold what `f` borrows across an `.await`: take what you need and return it.
    pub fn with<T: Any + Default, R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut slot = self.state.borrow_mut();
        if !slot.as_ref().is_some_and(|s| s.is::<T>()) {
            *slot = Some(Box::new(T::default()));
        }
        let state = slot
            .as_mut()
            .and_then(|s| s.downcast_mut::<T>())
            .expect("just made");
        f(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Auth {
        user: Option<String>,
    }

    #[test]
    fn state_is_made_on_first_use_and_kept() {
        let s = Session::default();
        assert!(!s.is_admitted());
        assert_eq!(s.with(|a: &mut Auth| a.user.clone()), None);
        s.with(|a: &mut Auth| a.user = Some("alice".into()));
        assert_eq!(
            s.with(|a: &mut Auth| a.user.clone()).as_deref(),
            Some("alice")
        );
        s.admit();
        assert!(s.is_admitted());
    }
}
