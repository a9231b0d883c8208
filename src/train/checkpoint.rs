//! Checkpoints: a net's parameters and an optimizer's state in one safetensors file.

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

impl<N: Shape, L: Chain<N>> Net<Init<N>, L> {
    /// Saves the parameters and the optimizer's state to one safetensors file: the
    /// parameters under their names, as [`save`](Net::save) writes them (so
    /// `load` with unexpected tensors allowed, or PyTorch, reads the weights), and the state as
    /// `optim.{name}.exp_avg`, `optim.{name}.exp_avg_sq`, `optim.{name}.step` (Adam) or
    /// `optim.{name}.momentum_buffer` (SGD).
    ///
    /// Training, saving, loading into a fresh net and optimizer with
    /// [`load_checkpoint`](Net::load_checkpoint) and training on gives the weights an
    /// uninterrupted run gives, bit for bit.
    ///
    /// # Errors
    /// [`TrainError::Save`] when the file cannot be written.
    pub fn save_checkpoint<O: Optimizer>(
        &self,
        path: impl AsRef<Path>,
        optimizer: &O,
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
        let bytes = encode_params(params.into_iter().chain(&state))?;
        write_file(path.as_ref(), &bytes)?;
        Ok(())
    }

    /// Loads a checkpoint [`save_checkpoint`](Net::save_checkpoint) wrote: the parameters
    /// into the net, the state into the optimizer. All or nothing: on an error neither
    /// changed. The optimizer's state becomes the file's: a file with none (one
    /// [`save`](Net::save) wrote, or saved before the first step) starts it afresh, as a new
    /// optimizer would.
    ///
    /// # Errors
    /// [`TrainError::Load`] when the file cannot be read, is not a safetensors file, or its
    /// tensors do not fit the net (a missing parameter, another shape, a tensor that belongs
    /// to neither the net nor the optimizer).
    pub fn load_checkpoint<O: Optimizer>(
        &mut self,
        path: impl AsRef<Path>,
        optimizer: &mut O,
    ) -> Result<(), TrainError> {
        let weights = Weights::read(path)?;
        let params: Vec<&Param> = self
            .state()
            .bound_layers()
            .iter()
            .flat_map(|l| &l.params)
            .collect();
        let state = optimizer.read_state(&params, &weights)?;
        // Every tensor belongs to the net or (checked by `read_state`) to the optimizer.
        let extra: Vec<&str> = weights
            .names()
            .filter(|n| !n.starts_with("optim.") && !params.iter().any(|p| p.name() == *n))
            .collect();
        if !extra.is_empty() {
            return Err(TrainError::Checkpoint {
                reason: format!(
                    "tensors of neither the net nor the optimizer: {}",
                    extra.join(", ")
                ),
            });
        }
        self.load_weights(&weights, LoadOptions::new().allow_unexpected(true))?;
        optimizer.set_state(state);
        Ok(())
    }
}
