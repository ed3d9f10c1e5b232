//! Broker sessions: the quorum's leader fences a broker it has not heard from within
//! `broker_session_timeout_ms` (`SetFenced`, through the log) and unfences it when heard again.

use super::*;

impl Quorum {
    /// On the leader, now and then: fences brokers not heard from within the session timeout,
    /// unfences those heard from again.
    pub(super) async fn check_sessions(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(SESSION_CHECK).await;
            if self.status.leader() != Some(self.me) {
                continue;
            }
            let changes: Vec<(u32, bool)> = {
                let state = self.state.borrow();
                let heard = self.last_heard.borrow();
                state
                    .brokers
                    .values()
                    .filter(|b| b.id != self.me)
                    .filter_map(|b| {
                        let lapsed = heard
                            .get(&b.id)
                            .is_none_or(|t| t.elapsed() > self.session_timeout);
                        // A broker stopping stays fenced until it registers again.
                        (lapsed != b.fenced && !b.shutting_down).then_some((b.id, lapsed))
                    })
                    .collect()
            };
            for (id, fenced) in changes {
                // Each change is made a moment after the last one committed (up to 5 s when
                // the quorum is in trouble): decided again now, from what is known now, and
                // only while this broker leads (`submit_as_leader`).
                if self.status.leader() != Some(self.me) {
                    break;
                }
                let still = self
                    .last_heard
                    .borrow()
                    .get(&id)
                    .is_none_or(|t| t.elapsed() > self.session_timeout);
                if still != fenced {
                    continue;
                }
                if fenced {
                    tracing::warn!(
                        broker = id,
                        timeout_ms = self.session_timeout.as_millis() as u64,
                        "fencing a broker not heard from"
                    );
                } else {
                    tracing::info!(broker = id, "unfencing a broker heard from again");
                }
                if let Err(e) = self
                    .submit_as_leader(MetadataCommand::SetFenced { id, fenced })
                    .await
                {
                    tracing::debug!(broker = id, error = %e, "fencing change not committed");
                }
            }
        }
    }
}
