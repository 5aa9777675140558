//! Read-only caption feeds that follow a live session.
//! STUB with the agreed contract; the captions work replaces it with the real hub.

use crate::protocol::ServerMessage;

#[derive(Default)]
pub struct CaptionHub {}

impl CaptionHub {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn open(&self, _session: &str) {}
    pub fn publish(&self, _session: &str, _msg: &ServerMessage) {}
    pub fn close(&self, _session: &str) {}
}
