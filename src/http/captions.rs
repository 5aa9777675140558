//! Caption feed routes. STUB: the captions work replaces this file.

use axum::Router;

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
