//! Two tiny single-threaded primitives for tasks on one glommio executor. Nothing here is `Send`:
//! everything lives on the core that created it.

use std::{
    cell::{Cell, RefCell},
    future::Future,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
};

/// Wakes one waiting task; a notification sent while nobody waits is kept until the next wait.
#[derive(Default)]
pub(crate) struct Notify {
    pending: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    pub fn notify(&self) {
        self.pending.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.pending.replace(false) {
                return Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
    }
}

struct OneshotInner<T> {
    value: Option<T>,
    waker: Option<Waker>,
    receiver_alive: bool,
    sender_alive: bool,
}

/// A one-value channel; the receiver yields `None` if the sender is dropped unsent.
pub(crate) fn oneshot<T>() -> (OneshotSender<T>, OneshotReceiver<T>) {
    let inner = Rc::new(RefCell::new(OneshotInner {
        value: None,
        waker: None,
        receiver_alive: true,
        sender_alive: true,
    }));
    (OneshotSender(inner.clone()), OneshotReceiver(inner))
}

pub(crate) struct OneshotSender<T>(Rc<RefCell<OneshotInner<T>>>);
pub(crate) struct OneshotReceiver<T>(Rc<RefCell<OneshotInner<T>>>);

impl<T> OneshotSender<T> {
    pub fn send(self, value: T) {
        let waker = {
            let mut inner = self.0.borrow_mut();
            inner.value = Some(value);
            inner.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// False once the receiver is gone: nobody waits for the answer any more.
    pub fn is_wanted(&self) -> bool {
        self.0.borrow().receiver_alive
    }
}

impl<T> Drop for OneshotSender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut inner = self.0.borrow_mut();
            inner.sender_alive = false;
            inner.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for OneshotReceiver<T> {
    fn drop(&mut self) {
        self.0.borrow_mut().receiver_alive = false;
    }
}

impl<T> Future for OneshotReceiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut inner = self.0.borrow_mut();
        if let Some(v) = inner.value.take() {
            return Poll::Ready(Some(v));
        }
        if !inner.sender_alive {
            return Poll::Ready(None);
        }
        inner.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A request's cancellation: set by the driver when the request's stream or connection goes
/// away, awaited beside the service future, which is then dropped. Cheap to make (one per
/// request) and cheap to wait on (one waker).
#[derive(Default)]
pub(crate) struct Cancel {
    cancelled: Cell<bool>,
    notify: Notify,
}

impl Cancel {
    pub fn cancel(&self) {
        self.cancelled.set(true);
        self.notify.notify();
    }

    pub async fn cancelled(&self) {
        while !self.cancelled.get() {
            self.notify.wait().await;
        }
    }
}
