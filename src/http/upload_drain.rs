//! Reading the rest of an upload that is refused, so that the client sees the refusal.
//!
//! An HTTP/1 client writes its whole request before it reads the answer. A refusal sent
//! while the file is still arriving (503 `not_ready` or `shutting_down`, 429 `engine_busy`,
//! a bad field ahead of the file) is followed by hyper closing the connection with unread
//! bytes, which the kernel turns into a reset: the client gets a broken pipe or a reset
//! instead of the error it could have acted on (found by tests/hybrid/files_unavailable.rs).

use std::time::Duration;

use axum::extract::Multipart;

/// Longest a refused upload is read for; a client slower than that is cut off.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads and drops what is left of `form`, at most `max_bytes` of it (an upload over the
/// limit is refused as too large anyway) and for at most [`DRAIN_TIMEOUT`].
pub async fn drain(form: &mut Multipart, max_bytes: usize) {
    let read = async {
        let mut total = 0usize;
        // A malformed rest ends the drain: the answer is an error either way.
        while let Ok(Some(mut field)) = form.next_field().await {
            while let Ok(Some(chunk)) = field.chunk().await {
                total += chunk.len();
                if total > max_bytes {
                    return;
                }
            }
        }
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, read).await.is_err() {
        tracing::debug!("stopped reading a refused upload after the drain timeout");
    }
}
