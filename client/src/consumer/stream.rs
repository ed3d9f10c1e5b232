//! [`ConsumerStream`]: a consumer's records as a [`futures_util::Stream`], one at a time.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;

use super::Consumer;
use crate::error::Result;
use crate::record::ConsumerRecord;

/// How long one `poll` inside the stream waits; the stream polls again right away when it
/// ran out, so this only bounds how long a poll's future lives.
const STREAM_POLL: Duration = Duration::from_secs(1);

/// The future of one `poll` inside the stream, which hands the consumer back with its result.
type Polling<'a> =
    Pin<Box<dyn Future<Output = (&'a mut Consumer, Result<Vec<ConsumerRecord>>)> + Send + 'a>>;

enum State<'a> {
    /// Between polls.
    Idle(&'a mut Consumer),
    /// A poll is under way.
    Polling(Polling<'a>),
    /// Only while `poll_next` moves from one state to the other.
    Moving,
}

/// The records of a [`Consumer`], one at a time, from [`Consumer::stream`].
///
/// It polls the consumer as needed (group changes, auto-commit and fetches happen there as in
/// [`Consumer::poll`]); records it has polled but not yielded yet go back to the consumer when
/// the stream is dropped, so `stream().take(10)` takes ten records and the next `poll` (or
/// stream) goes on with the eleventh. A record counts as processed (its offset may be
/// committed) once the stream is asked for the records after the batch it came in, as with
/// `poll`. Errors are yielded as items and the stream goes on; it never ends.
pub struct ConsumerStream<'a> {
    state: State<'a>,
    pending: VecDeque<ConsumerRecord>,
}

impl Consumer {
    /// This consumer's records as a [`Stream`] of `Result<ConsumerRecord>`, one record at a
    /// time (rdkafka's `StreamConsumer::stream`). It borrows the consumer; to use it in
    /// another task, move the consumer into that task and call `stream()` there.
    ///
    /// ```no_run
    /// # async fn f(mut consumer: quiver_client::Consumer) -> quiver_client::Result<()> {
    /// use futures_util::StreamExt;
    /// consumer.subscribe(vec!["orders".into()]).await?;
    /// let mut records = consumer.stream();
    /// while let Some(r) = records.next().await {
    ///     let r = r?;
    ///     println!("{}/{}@{}: {:?}", r.topic, r.partition, r.offset, r.value_str());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn stream(&mut self) -> ConsumerStream<'_> {
        ConsumerStream {
            state: State::Idle(self),
            pending: VecDeque::new(),
        }
    }
}

impl Stream for ConsumerStream<'_> {
    type Item = Result<ConsumerRecord>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(r) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(r)));
            }
            match std::mem::replace(&mut this.state, State::Moving) {
                State::Idle(consumer) => {
                    this.state = State::Polling(Box::pin(async move {
                        let result = consumer.poll(STREAM_POLL).await;
                        (consumer, result)
                    }));
                }
                State::Polling(mut polling) => match polling.as_mut().poll(cx) {
                    Poll::Pending => {
                        this.state = State::Polling(polling);
                        return Poll::Pending;
                    }
                    Poll::Ready((consumer, result)) => {
                        this.state = State::Idle(consumer);
                        match result {
                            Ok(records) => this.pending.extend(records),
                            Err(e) => return Poll::Ready(Some(Err(e))),
                        }
                    }
                },
                State::Moving => unreachable!("poll_next always leaves a state"),
            }
        }
    }
}

impl Drop for ConsumerStream<'_> {
    fn drop(&mut self) {
        // Records are pending only between polls, when the consumer is here.
        if let State::Idle(consumer) = &mut self.state {
            if !self.pending.is_empty() {
                consumer.rewind(self.pending.drain(..).collect());
            }
        }
    }
}

/// The stream can be moved into a spawned task with its consumer's borrow.
#[allow(dead_code)]
fn consumer_stream_is_send(c: &mut Consumer) {
    fn send<T: Send>(_: &T) {}
    send(&c.stream());
}
