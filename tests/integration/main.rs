//! lazynet's integration tests: one crate, one module per concern.

mod api;
mod batch;
mod conv;
mod props;
mod strategies;
mod ui;
mod weights;
