//! Checkpoints: a net's parameters and an optimizer's state in one safetensors file.

use std::path::Path;

use super::{Optimizer, TrainError};
use crate::list::Chain;
use crate::net::Net;
use crate::shape::Shape;
use crate::state::{Bound, Init, Param};
use crate::weights::{encode_params, write_file, LoadError, LoadOptions, Weights};

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
        let state = optimizer.state_tensors();
        let params = self.state().bound_layers().iter().flat_map(|l| &l.params);
        let bytes = encode_params(params.chain(&state))?;
        write_file(path.as_ref(), &bytes)?;
        Ok(())
    }

    /// Loads a checkpoint [`save_checkpoint`](Net::save_checkpoint) wrote: the parameters
    /// into the net, the state into the optimizer. All or nothing: on an error neither
    /// changed.
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
        let extra: Vec<(String, Vec<usize>)> = weights
            .names()
            .filter(|n| !n.starts_with("optim.") && !params.iter().any(|p| p.name() == *n))
            .map(|n| {
                let shape = weights
                    .get(n)
                    .map(|t| t.shape().to_vec())
                    .unwrap_or_default();
                (n.to_owned(), shape)
            })
            .collect();
        if !extra.is_empty() {
            return Err(LoadError::Unexpected { tensors: extra }.into());
        }
        self.load_weights(&weights, LoadOptions::new().allow_unexpected(true))?;
        optimizer.set_state(state);
        Ok(())
    }
}
