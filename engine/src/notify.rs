//! A single-threaded "something changed" signal. Waiters register a waker under a key and remove
//! it when dropped, so a long-poll that times out over and over on an idle log leaves nothing
//! behind (cancel-safe, bounded by the number of live waiters).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub(crate) struct Notify {
    version: Cell<u64>,
    next_key: Cell<u64>,
    waiters: RefCell<BTreeMap<u64, Waker>>,
}

impl Notify {
    /// Wakes every current waiter.
    pub(crate) fn notify_all(&self) {
        self.version.set(self.version.get() + 1);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, w) in waiters {
            w.wake();
        }
    }

    /// A future that resolves at the first `notify_all` after this call. Create it before
    /// checking the condition it waits for, so no notification slips in between.
    pub(crate) fn listen(&self) -> Listen<'_> {
        let key = self.next_key.get();
        self.next_key.set(key + 1);
        Listen {
            notify: self,
            version: self.version.get(),
            key,
        }
    }

    #[cfg(test)]
    pub(crate) fn waiter_count(&self) -> usize {
        self.waiters.borrow().len()
    }
}

pub(crate) struct Listen<'a> {
    notify: &'a Notify,
    version: u64,
    key: u64,
}

impl Future for Listen<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.version.get() != self.version {
            return Poll::Ready(());
        }
        self.notify
            .waiters
            .borrow_mut()
            .insert(self.key, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Listen<'_> {
    fn drop(&mut self) {
        self.notify.waiters.borrow_mut().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dropped_listeners_leave_nothing_and_notify_wakes() {
        glommio::LocalExecutor::default().run(async {
            let n = Notify::default();
            for _ in 0..100 {
                let l = n.listen();
                let r = glommio::timer::timeout(Duration::from_millis(1), async {
                    l.await;
                    Ok(())
                })
                .await;
                assert!(r.is_err());
            }
            assert_eq!(n.waiter_count(), 0, "timed-out waiters are gone");
            let l = n.listen();
            n.notify_all();
            l.await; // resolves: the notification came after listen()
        });
    }
}
