//! Read-only caption feeds that follow a live session (owned by the captions work).
