//! Checkpoints: a net's parameters, an optimizer's state and hyper-parameters, and where a fit
//! stood, in one safetensors file.

use std::collections::BTreeMap;
use std::path::Path;

use nalgebra::DMatrix;

use super::optim::ValueRef;
use super::{Optimizer, TrainError};
use crate::alloc::try_clone;
use crate::init::{Dims, Role};
use crate::list::Chain;
use crate::net::Net;
use crate::shape::Shape;
use crate::state::{Bound, Init, Param};
use crate::weights::{encode_params, write_file, LoadOptions, Weights};

/// Where a fit stood when a checkpoint was saved: the epochs finished and the fit's seed.
/// [`Fit::resume`](super::Fit::resume) goes on from there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Progress {
    /// The number of epochs finished.
    pub epoch: usize,
    /// The fit's shuffling seed.
    pub seed: u64,
}

/// Which hyper-parameters an optimizer keeps when a checkpoint is loaded into it
/// ([`Net::load_checkpoint_with`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Hyper {
    /// The file's and the optimizer's must be equal, or loading is an error naming those that
    /// differ ([`TrainError::HyperMismatch`]). What [`Net::load_checkpoint`] does.
    #[default]
    Match,
    /// The optimizer keeps its own (a run resumed with another learning rate, say).
    KeepOwn,
    /// The optimizer takes the file's, as PyTorch's `optimizer.load_state_dict` does.
    FromFile,
}

/// The metadata key of the optimizer's name.
const OPTIMIZER: &str = "lazynet.optimizer";
/// The prefix of the hyper-parameters' keys: `lazynet.optimizer.lr`.
const HYPER: &str = "lazynet.optimizer.";
/// The key of the epochs finished.
const EPOCH: &str = "lazynet.fit.epoch";
/// The key of the fit's seed.
const SEED: &str = "lazynet.fit.seed";
/// The metadata key of the optimizer steps the net has taken, which key the random streams
/// of its training passes (dropout masks).
const STEPS: &str = "lazynet.steps";

impl<N: Shape, L: Chain<N>> Net<Init<N>, L> {
    /// Saves the parameters and the optimizer's state to one safetensors file: the
    /// parameters under their names, as [`save`](Net::save) writes them (so
    /// `load` with unexpected tensors allowed, or PyTorch, reads the weights), and the state as
    /// `optim.{name}.exp_avg`, `optim.{name}.exp_avg_sq`, `optim.{name}.step` (Adam) or
    /// `optim.{name}.momentum_buffer` (SGD). The file's metadata holds the optimizer's
    /// hyper-parameters (`lazynet.optimizer = Adam`, `lazynet.optimizer.lr = 0.001`, …), as
    /// PyTorch's optimizer `state_dict` holds its `param_groups`.
    ///
    /// Training, saving, loading into a fresh net and optimizer with
    /// [`load_checkpoint`](Net::load_checkpoint) and training on gives the weights an
    /// uninterrupted run gives, bit for bit.
    ///
    /// # Errors
    /// [`TrainError::Save`] when the file cannot be written; [`TrainError::Checkpoint`] when
    /// the optimizer's state belongs to another net.
    pub fn save_checkpoint<O: Optimizer>(
        &self,
        path: impl AsRef<Path>,
        optimizer: &O,
    ) -> Result<(), TrainError> {
        self.write_checkpoint(path.as_ref(), optimizer, None)
    }

    /// [`save_checkpoint`](Net::save_checkpoint) that also records where a fit stands (the
    /// epochs finished and its seed), as [`Fit::checkpoint`](super::Fit::checkpoint) does
    /// after every epoch.
    ///
    /// # Errors
    /// As [`save_checkpoint`](Net::save_checkpoint).
    pub fn save_checkpoint_at<O: Optimizer>(
        &self,
        path: impl AsRef<Path>,
        optimizer: &O,
        progress: Progress,
    ) -> Result<(), TrainError> {
        self.write_checkpoint(path.as_ref(), optimizer, Some(progress))
    }

    fn write_checkpoint<O: Optimizer>(
        &self,
        path: &Path,
        optimizer: &O,
        progress: Option<Progress>,
    ) -> Result<(), TrainError> {
        let params: Vec<&Param> = self
            .state()
            .bound_layers()
            .iter()
            .flat_map(|l| &l.params)
            .collect();
        let mut state = Vec::new();
        for t in optimizer.state_tensors() {
            // The state must belong to this net: a checkpoint that `load_checkpoint` refuses
            // is not written.
            let owner = params.iter().find(|p| p.name() == t.param);
            let fits = match (&t.value, owner) {
                (ValueRef::Matrix(m), Some(p)) => {
                    p.shape() == t.shape && p.value().shape() == m.shape()
                }
                (ValueRef::Step(_), Some(_)) => true,
                (_, None) => false,
            };
            if !fits {
                return Err(TrainError::Checkpoint {
                    reason: format!(
                        "the optimizer keeps `{}` state of shape {} for `{}`, which this net does not have with that shape: it was stepped on another net",
                        t.what,
                        Dims(t.shape),
                        t.param
                    ),
                });
            }
            let name = format!("optim.{}.{}", t.param, t.what);
            let value = match t.value {
                ValueRef::Matrix(m) => try_clone(m, || format!("a copy of `{name}`"))?,
                ValueRef::Step(step) => DMatrix::from_element(1, 1, step as f32),
            };
            state.push(Param::new(name, t.shape, Role::Weight, value)?);
        }
        let mut metadata = BTreeMap::new();
        let (name, hyper) = optimizer.hyper();
        metadata.insert(OPTIMIZER.to_owned(), name.to_owned());
        for (key, value) in hyper {
            // `{}` of an `f64` is the shortest text that parses back to it.
            metadata.insert(format!("{HYPER}{key}"), value.to_string());
        }
        metadata.insert(STEPS.to_owned(), self.state().steps().to_string());
        if let Some(p) = progress {
            metadata.insert(EPOCH.to_owned(), p.epoch.to_string());
            metadata.insert(SEED.to_owned(), p.seed.to_string());
        }
        let buffers = self
            .state()
            .bound_layers()
            .iter()
            .flat_map(|l| &l.buffers)
            .map(Into::into);
        let entries = params
            .into_iter()
            .chain(&state)
            .map(Into::into)
            .chain(buffers);
        let bytes = encode_params(entries, &metadata)?;
        write_file(path, &bytes)?;
        Ok(())
    }

    /// Loads a checkpoint [`save_checkpoint`](Net::save_checkpoint) wrote: the parameters
    /// into the net, the state into the optimizer, and returns where the fit stood, if the
    /// file says ([`Progress`], for [`Fit::resume`](super::Fit::resume)). All or nothing: on
    /// an error neither changed. The optimizer's state becomes the file's: a file with none
    /// (one [`save`](Net::save) wrote, or saved before the first step) starts it afresh, as a
    /// new optimizer would.
    ///
    /// The file's hyper-parameters must be the optimizer's ([`Hyper::Match`]): the learning
    /// rate it was built with (`initial_lr`), the betas, eps, momentum, dampening, Nesterov and
    /// weight decay. The learning rate a schedule set during the fit is state, and the
    /// optimizer takes it from the file. [`load_checkpoint_with`](Net::load_checkpoint_with)
    /// keeps the optimizer's or takes the file's instead. A file without them (one
    /// [`save`](Net::save) wrote) is not compared.
    ///
    /// # Errors
    /// * [`TrainError::Load`] when the file cannot be read, is not a safetensors file, or the
    ///   net's parameters in it do not fit the net (a missing parameter, another shape);
    /// * [`TrainError::Checkpoint`] when the optimizer state does not fit: another shape, an
    ///   incomplete state, a value that is not finite (or a negative second moment), a tensor
    ///   of neither the net nor the optimizer, metadata that cannot be read;
    /// * [`TrainError::HyperMismatch`] when the hyper-parameters differ, naming them.
    ///
    /// # Example
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let mut net = Net::new().push(Dense::<U2>::new()).seed(0).bind::<U3>();
    /// let x = Batch::<U3>::from_fn(4, |f, s| (f + s) as f32);
    /// let labels = Labels::<U2>::try_new(vec![0, 1, 0, 1])?;
    /// let mut adam = Adam::new(1e-3);
    /// let (_, grads) = net.loss_and_grads(&x, &labels, CrossEntropy)?;
    /// adam.step(&mut net, &grads)?;
    /// let path = std::env::temp_dir().join("lazynet-doc-checkpoint.safetensors");
    /// net.save_checkpoint_at(&path, &adam, Progress { epoch: 3, seed: 7 })?;
    ///
    /// let mut other = Adam::new(1e-2);
    /// assert!(net.load_checkpoint(&path, &mut other).is_err()); // built with 0.01, not 0.001
    /// let progress = net.load_checkpoint_with(&path, &mut other, Hyper::FromFile)?;
    /// assert_eq!((progress, other.lr()), (Some(Progress { epoch: 3, seed: 7 }), 1e-3));
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn load_checkpoint<O: Optimizer>(
        &mut self,
        path: impl AsRef<Path>,
        optimizer: &mut O,
    ) -> Result<Option<Progress>, TrainError> {
        self.load_checkpoint_with(path, optimizer, Hyper::Match)
    }

    /// [`load_checkpoint`](Net::load_checkpoint), keeping the optimizer's hyper-parameters or
    /// taking the file's as `hyper` says.
    ///
    /// # Errors
    /// As [`load_checkpoint`](Net::load_checkpoint).
    pub fn load_checkpoint_with<O: Optimizer>(
        &mut self,
        path: impl AsRef<Path>,
        optimizer: &mut O,
        hyper: Hyper,
    ) -> Result<Option<Progress>, TrainError> {
        let weights = Weights::read(path)?;
        // The net's own tensors first: a checkpoint of another net is named by its parameters
        // (`0.weight` of another shape), not by the optimizer state that follows them.
        let values = weights.values_for(
            self.state().bound_layers(),
            LoadOptions::new().allow_unexpected(true),
        )?;
        let buffers = weights.buffers_for(self.state().bound_layers())?;
        let steps = match weights.metadata(STEPS) {
            Some(text) => text.parse().map_err(|_| TrainError::Checkpoint {
                reason: format!("the metadata's `{STEPS}` is {text:?}, not a whole number"),
            })?,
            None => 0,
        };
        let saved = read_hyper(&weights, optimizer)?;
        if let (Hyper::Match, Some(saved)) = (hyper, &saved) {
            compare_hyper(saved, optimizer)?;
        }
        let progress = read_progress(&weights)?;
        let params: Vec<&Param> = self
            .state()
            .bound_layers()
            .iter()
            .flat_map(|l| &l.params)
            .collect();
        let state = optimizer.read_state(&params, &weights)?;
        let aliases = crate::weights::buffer_aliases(self.state().bound_layers());
        // Every tensor belongs to the net or (checked by `read_state`) to the optimizer.
        let extra: Vec<&str> = weights
            .names()
            .filter(|n| !n.starts_with("optim.") && !params.iter().any(|p| p.name() == *n))
            .filter(|n| !self.named_buffers().any(|b| b.name() == *n))
            .filter(|n| !aliases.iter().any(|(_, later)| later == n))
            .collect();
        if !extra.is_empty() {
            return Err(TrainError::Checkpoint {
                reason: format!(
                    "tensors of neither the net nor the optimizer: {}",
                    extra.join(", ")
                ),
            });
        }
        // What the optimizer takes from the file, checked by its own rules before anything
        // changes: a crafted file cannot set a negative rate or a beta of 5.
        let taken: Vec<(&'static str, f64)> = match (hyper, &saved) {
            (Hyper::FromFile, Some((_, values))) => values.clone(),
            // The rate a schedule had set is state: the run goes on from it.
            (Hyper::Match, Some((_, values))) => {
                values.iter().copied().filter(|(k, _)| *k == "lr").collect()
            }
            _ => Vec::new(),
        };
        optimizer
            .check_with(&taken)
            .map_err(|err| TrainError::Checkpoint {
                reason: format!("its optimizer metadata would make the optimizer invalid: {err}"),
            })?;
        self.set_values(values);
        self.set_buffers(buffers);
        *self.state_mut().steps_mut() = steps;
        optimizer.set_state(state);
        optimizer.set_hyper(&taken);
        Ok(progress)
    }
}

/// The optimizer's name and hyper-parameters the file records, `None` when it records none.
/// A file of another optimizer is an error, whatever the [`Hyper`] policy.
#[allow(clippy::type_complexity)]
fn read_hyper<O: Optimizer>(
    weights: &Weights<'_>,
    optimizer: &O,
) -> Result<Option<(String, Vec<(&'static str, f64)>)>, TrainError> {
    let Some(saved) = weights.metadata(OPTIMIZER) else {
        return Ok(None);
    };
    let (name, mine) = optimizer.hyper();
    if saved != name {
        return Err(TrainError::Checkpoint {
            reason: format!(
                "it holds the state of an {saved} optimizer, which cannot be loaded into {name}"
            ),
        });
    }
    let mut values = Vec::with_capacity(mine.len());
    for (key, _) in mine {
        let full = format!("{HYPER}{key}");
        let Some(text) = weights.metadata(&full) else {
            return Err(TrainError::Checkpoint {
                reason: format!("the metadata names the optimizer {saved} but has no `{full}`"),
            });
        };
        let value = text
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| TrainError::Checkpoint {
                reason: format!("the metadata's `{full}` is {text:?}, not a finite number"),
            })?;
        values.push((key, value));
    }
    Ok(Some((saved.to_owned(), values)))
}

/// Checks that the file's hyper-parameters are the optimizer's, naming those that differ. The
/// learning rate now (`lr`) is not compared: a schedule changes it during a fit, and it is
/// state, taken from the file; the rate the optimizer was built with (`initial_lr`) is.
fn compare_hyper<O: Optimizer>(
    (name, saved): &(String, Vec<(&'static str, f64)>),
    optimizer: &O,
) -> Result<(), TrainError> {
    let (_, mine) = optimizer.hyper();
    let differ: Vec<(&str, f64, f64)> = saved
        .iter()
        .zip(&mine)
        .filter(|((key, _), _)| *key != "lr")
        .filter(|((_, a), (_, b))| a.to_bits() != b.to_bits())
        .map(|((key, a), (_, b))| (*key, *a, *b))
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    let list = |pick: fn(&(&str, f64, f64)) -> f64| {
        differ
            .iter()
            .map(|d| format!("{} {}", d.0, pick(d)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(TrainError::HyperMismatch {
        saved: format!("{name} with {}", list(|d| d.1)),
        current: format!("{name} with {}", list(|d| d.2)),
    })
}

/// Where the fit stood, when the file records it.
fn read_progress(weights: &Weights<'_>) -> Result<Option<Progress>, TrainError> {
    let (epoch, seed) = match (weights.metadata(EPOCH), weights.metadata(SEED)) {
        (Some(epoch), Some(seed)) => (epoch, seed),
        (None, None) => return Ok(None),
        (Some(_), None) | (None, Some(_)) => {
            return Err(TrainError::Checkpoint {
                reason: format!("the metadata has one of `{EPOCH}` and `{SEED}` but not both"),
            })
        }
    };
    let bad = |key: &str, text: &str| TrainError::Checkpoint {
        reason: format!("the metadata's `{key}` is {text:?}, not a whole number"),
    };
    Ok(Some(Progress {
        epoch: epoch.parse().map_err(|_| bad(EPOCH, epoch))?,
        seed: seed.parse().map_err(|_| bad(SEED, seed))?,
    }))
}
