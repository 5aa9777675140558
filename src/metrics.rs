//! Prometheus metrics (owned by the OpenAI/metrics work).
