//! One task waiting on many things at once, without a copy of its waker for each.
//!
//! glommio counts a task's waker clones in 16 bits and panics past 32,767 ("Waker invariant
//! broken"). A fetch that waits on every partition of a shard (a consumer of 100,000
//! partitions) registers one waker per partition's notifier: without this, one request could
//! end the broker. [`fan_in`] polls the waits with a waker of its own (an `Arc`, counted in a
//! `usize`), which wakes the task's real waker, held once.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// Holds the task's waker; woken by any of the many wakers cloned from it.
struct Relay(Mutex<Option<Waker>>);

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let waker = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// `inner`, polled with a relaying waker: however many times `inner` clones its waker, the
/// task's own is cloned once per poll.
pub fn fan_in<F: Future>(inner: F) -> FanIn<F> {
    let relay = Arc::new(Relay(Mutex::new(None)));
    FanIn {
        inner: Box::pin(inner),
        waker: Waker::from(relay.clone()),
        relay,
    }
}

pub struct FanIn<F> {
    inner: Pin<Box<F>>,
    relay: Arc<Relay>,
    waker: Waker,
}

impl<F: Future> Future for FanIn<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        *self.relay.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
        let this = &mut *self;
        let mut relayed = Context::from_waker(&this.waker);
        this.inner.as_mut().poll(&mut relayed)
    }
}

#[cfg(test)]
mod tests {
    use super::fan_in;
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::task::{Poll, Waker};

    /// 40,000 waits in one glommio task (past its 32,767 waker clones), one of them woken
    /// later: the task wakes and ends instead of panicking.
    #[test]
    fn a_task_waits_on_more_things_than_glommio_counts_wakers() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let wakers: Rc<RefCell<Vec<Waker>>> = Rc::default();
                let done = Rc::new(std::cell::Cell::new(false));
                let waits = (0..40_000).map(|i| {
                    let (wakers, done) = (wakers.clone(), done.clone());
                    Box::pin(std::future::poll_fn(move |cx| {
                        if i == 39_999 && done.get() {
                            return Poll::Ready(());
                        }
                        wakers.borrow_mut().push(cx.waker().clone());
                        Poll::Pending
                    }))
                });
                let any = futures_util::future::select_all(waits);
                let (w, d) = (wakers.clone(), done.clone());
                glommio::spawn_local(async move {
                    glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
                    d.set(true);
                    let last = w.borrow().last().cloned().expect("registered");
                    last.wake();
                })
                .detach();
                let (_, index, _) = fan_in(any).await;
                assert_eq!(index, 39_999);
                assert!(wakers.borrow().len() >= 40_000);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
