//! lazynet's integration tests: one crate, one module per concern.

mod api;
mod batch;
mod conv;
mod props;
mod robust;
mod strategies;
mod train;
mod ui;
mod weights;
