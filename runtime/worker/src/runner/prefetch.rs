//! The ack gate and the event stream opened ahead of the runner.

use tracing::Instrument as _;

use super::AbortOnDrop;
use crate::client::{ApiError, EventStream, History, ItemClient};

/// An event stream opened, then the history read, ahead of the runner.
pub type Prefetched = Result<(EventStream, Result<History, ApiError>), ApiError>;

/// A running [`prefetch_stream`] task (aborted when dropped).
pub struct Prefetch(pub(super) AbortOnDrop<Prefetched>);

/// The answer to a work item's ack, as the item task sees it while its reads run ahead of it.
///
/// The worker starts the item's reads (session, event stream, history, skills, memory) at the
/// same time as the ack (see [`crate::worker`]); this gate tells them whether the ack has been
/// answered yet and how. `None` = not answered yet; a dropped sender counts as a failed ack.
#[derive(Clone, Debug)]
pub struct AckGate(tokio::sync::watch::Receiver<Option<bool>>);

impl AckGate {
    /// A gate and the sender that opens it (`Some(true)`: acked; `Some(false)`: the ack failed).
    pub fn new() -> (tokio::sync::watch::Sender<Option<bool>>, AckGate) {
        let (tx, rx) = tokio::sync::watch::channel(None);
        (tx, AckGate(rx))
    }

    /// A gate that is already open (the item was acked before it was handed over).
    pub fn acked_already() -> AckGate {
        let (_tx, rx) = tokio::sync::watch::channel(Some(true));
        AckGate(rx)
    }

    /// Whether the ack has been answered (either way).
    pub fn answered(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// Waits for the ack's answer: true once it succeeded, false if it failed (or its sender
    /// went away without answering).
    pub async fn acked(&mut self) -> bool {
        match self.0.wait_for(Option::is_some).await {
            Ok(v) => *v == Some(true),
            Err(_) => false,
        }
    }
}

/// Runs an idempotent read that may go out before the item's ack was answered; if the control
/// plane refused it (a fatal 4xx such as 401/403: the item's sessions token may only become
/// valid once the ack lands) and the ack had not been answered when the read was sent, waits
/// for the ack and, once it succeeded, sends the read once more. A read sent after the ack's
/// answer is not retried here (its refusal is the real answer). Only reads go through this:
/// nothing is ever *posted* before the ack.
pub async fn read_after_ack<T, F, Fut>(gate: &mut AckGate, op: F) -> Result<T, ApiError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let before_ack = !gate.answered();
    match op().await {
        Err(e) if before_ack && e.is_fatal() => {
            tracing::debug!(error = %e, "a read sent before the ack's answer was refused; retrying it after the ack");
            if gate.acked().await {
                op().await
            } else {
                Err(e)
            }
        }
        r => r,
    }
}

/// Opens the session's event stream and then reads its history, in the background, so
/// that both are ready when the runner starts (the worker starts this together with the ack,
/// and it runs while the sandbox is created and skills are installed). The order is the
/// runner's own (stream first, so nothing appended between the two reads is missed). Both are
/// reads: a refusal met before the ack's answer is retried once after a successful ack
/// ([`read_after_ack`]).
pub fn prefetch_stream(client: ItemClient, gate: AckGate) -> Prefetch {
    Prefetch(AbortOnDrop(tokio::spawn(
        async move {
            let mut gate = gate;
            let stream = read_after_ack(&mut gate, || client.stream()).await?;
            let history = read_after_ack(&mut gate, || client.list_events()).await;
            Ok((stream, history))
        }
        .in_current_span(),
    )))
}
