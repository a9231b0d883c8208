//! lazynet's integration tests: one crate, one module per concern.

mod ui;
