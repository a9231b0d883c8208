//! lazynet's integration tests: one crate, one module per concern.

mod api;
mod attack;
mod attack15;
mod attack16;
mod attack_grads;
mod attack_zero;
mod batch;
mod compose;
mod conv;
mod data;
mod fit_keras;
mod gradcheck;
mod gradcheck_norm;
mod layers;
mod nonlinear;
mod norm;
mod promises;
mod props;
mod props_norm;
mod robust;
mod stems;
mod strategies;
mod train;
mod train_fixtures;
mod ui;
mod weights;
