//! wharf's integration tests: one test binary, real processes.
//!
//! Every test starts its own `docker-registry` (the real Distribution binary, on a free
//! 127.0.0.1 port, with its own storage), its own wharf (in-process or as a child process) and,
//! where a client matters, the real client (`skopeo`, `helm`). Nothing is shared between tests,
//! so they run in parallel threads. The harness lives in [`common`]; missing tools make a test
//! panic with an install hint instead of being skipped.
//!
//! Run: `cargo test --test it` (one test: `cargo test --test it -- proxy::helm`).
//! Debug output of wharf in-process: `RUST_LOG=wharf=debug cargo test --test it -- --nocapture`.

mod common;

mod chartrepo;
mod chat;
mod cli;
mod deploy;
mod events;
mod harbor;
mod harborapi;
mod hardening;
mod harness;
mod lifecycle;
mod proxy;
mod proxy_http;
mod replicas;
mod side;
mod store;
mod tls;
mod ui;
mod upstream_tls;
mod webhooks;
