//! lazynet's integration tests: one crate, one module per concern.

mod api;
mod batch;
mod conv;
mod gradcheck;
mod props;
mod robust;
mod strategies;
mod ui;
mod weights;
