//! What a kernel is told about the pass it runs in: training or inference, its layer's
//! buffers (state that is not learned, such as running statistics) and a random stream.

use core::fmt;

use nalgebra::DMatrix;

use crate::error::ShapeError;
use crate::init::InitRng;
use crate::partial::{Dims, PartialShape};

/// Whether a pass trains the net or uses it.
///
/// The mode follows from the call, never from a flag: [`Net::forward`](crate::Net::forward),
/// [`try_forward`](crate::Net::try_forward), [`predict`](crate::Net::predict) and
/// [`evaluate`](crate::Net::evaluate) infer ([`Mode::Eval`]);
/// [`loss_and_grads`](crate::Net::loss_and_grads) and [`fit`](crate::Net::fit) train
/// ([`Mode::Train`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Training: batch statistics, dropout.
    Train,
    /// Inference: running statistics, no dropout.
    Eval,
}

/// How a buffer starts and what values it may hold.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum BufferKind {
    /// `f32` values, all `fill` at first (and after
    /// [`reinitialize`](crate::Net::reinitialize)). With `nonnegative`, a file holding a
    /// negative value or NaN is refused (a variance).
    Values {
        /// The value it starts with.
        fill: f32,
        /// Whether every value must be at least 0.
        nonnegative: bool,
    },
    /// A count, a whole number from 0 up, stored as `int64` of shape `[]` as PyTorch stores
    /// `num_batches_tracked`; 0 at first.
    Count,
}

/// A buffer a layer declares (see [`Layer::buffers`](super::Layer::buffers)): its name's
/// suffix, its shape as far as the input is known, and its kind.
#[derive(Clone, Debug, PartialEq)]
pub struct BufferSpec {
    /// The suffix of its name: `running_mean` is `3.running_mean` at layer 3.
    pub name: &'static str,
    /// Its shape; `[]` for a [`BufferKind::Count`].
    pub shape: PartialShape,
    /// How it starts and what it may hold.
    pub kind: BufferKind,
}

/// The value of a buffer.
#[derive(Clone, Debug, PartialEq)]
pub enum BufferValue {
    /// `f32` values, stored as a parameter is: a `d0 × (d1·…)` matrix, a column for a 1-d
    /// shape.
    Values(DMatrix<f32>),
    /// A count (`int64` in files).
    Count(i64),
}

/// A buffer of a bound layer: state that is not learned, such as a batch normalization's
/// running statistics. Buffers are not parameters: [`named_params`](crate::Net::named_params),
/// the gradients and the optimizers never see them; [`Net::named_buffers`](crate::Net::named_buffers)
/// lists them, and [`save`](crate::Net::save) and [`load`](crate::Net::load) write and read
/// them under PyTorch's names.
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    pub(crate) name: String,
    pub(crate) shape: Vec<usize>,
    pub(crate) kind: BufferKind,
    pub(crate) value: BufferValue,
}

impl Buffer {
    /// A buffer named `name` of kind `kind` and shape `shape`, at its starting value; for
    /// testing a [`Kernel`](super::Kernel) on its own.
    ///
    /// # Errors
    /// [`ShapeError::OutOfMemory`] when its values cannot be allocated.
    pub fn new(
        name: impl Into<String>,
        shape: &[usize],
        kind: BufferKind,
    ) -> Result<Self, ShapeError> {
        let name = name.into();
        let value = start_value(&name, shape, kind)?;
        Ok(Buffer {
            name,
            shape: shape.to_vec(),
            kind,
            value,
        })
    }

    /// Its name, e.g. `"3.running_mean"`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its shape in PyTorch's order; `[]` for a count.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Its kind.
    pub fn kind(&self) -> BufferKind {
        self.kind
    }

    /// Its value.
    pub fn value(&self) -> &BufferValue {
        &self.value
    }

    /// Its values, for a buffer of values.
    pub fn values(&self) -> Option<&DMatrix<f32>> {
        match &self.value {
            BufferValue::Values(v) => Some(v),
            BufferValue::Count(_) => None,
        }
    }

    /// Its count, for a count.
    pub fn count(&self) -> Option<i64> {
        match self.value {
            BufferValue::Count(c) => Some(c),
            BufferValue::Values(_) => None,
        }
    }

    /// Whether `value` fits this buffer: values of its shape (finite or not, but at least 0
    /// and not NaN for a nonnegative one), or a count from 0 up for a count. The error says
    /// what was expected and what was found.
    pub(crate) fn check(&self, value: &BufferValue) -> Result<(), String> {
        self.check_values(value, true)
    }

    /// [`check`](Buffer::check), with the rule on a nonnegative buffer's values only when
    /// `ranged`: a training pass may compute NaN (from a NaN input), which the optimizer's
    /// step refuses.
    pub(crate) fn check_values(&self, value: &BufferValue, ranged: bool) -> Result<(), String> {
        match (self.kind, value) {
            (BufferKind::Values { nonnegative, .. }, BufferValue::Values(v)) => {
                let nonnegative = nonnegative && ranged;
                let (rows, cols) = matrix_shape(&self.shape);
                if v.shape() != (rows, cols) {
                    return Err(format!(
                        "values of shape {} ({rows} × {cols}) were expected, {} × {} were found",
                        Dims(&self.shape),
                        v.nrows(),
                        v.ncols()
                    ));
                }
                if nonnegative {
                    // Row-major, the order of the file and of PyTorch's flat index.
                    let (rows, cols) = v.shape();
                    let bad = (0..rows)
                        .flat_map(|r| (0..cols).map(move |c| (r, c)))
                        .enumerate()
                        .find_map(|(i, at)| {
                            v.get(at)
                                .filter(|x| x.is_nan() || **x < 0.0)
                                .map(|x| (i, *x))
                        });
                    if let Some((index, x)) = bad {
                        return Err(format!(
                            "every value must be at least 0 (a variance), but flat index {index} holds {x}"
                        ));
                    }
                }
                Ok(())
            }
            (BufferKind::Count, BufferValue::Count(c)) if *c >= 0 => Ok(()),
            (BufferKind::Count, BufferValue::Count(c)) => Err(format!(
                "a count is a whole number from 0 up, {c} was found"
            )),
            (BufferKind::Count, BufferValue::Values(_)) => {
                Err("a count (int64) was expected, values were found".into())
            }
            (BufferKind::Values { .. }, BufferValue::Count(_)) => Err(format!(
                "values of shape {} were expected, a count was found",
                Dims(&self.shape)
            )),
        }
    }

    /// Sets it back to its starting value.
    pub(crate) fn fresh(&self) -> Result<Buffer, ShapeError> {
        Buffer::new(self.name.clone(), &self.shape, self.kind)
    }
}

/// The `rows × cols` matrix a tensor of `shape` is stored as.
fn matrix_shape(shape: &[usize]) -> (usize, usize) {
    let rows = shape.first().copied().unwrap_or(1);
    let cols = shape
        .iter()
        .skip(1)
        .try_fold(1usize, |n, d| n.checked_mul(*d))
        .unwrap_or(usize::MAX);
    (rows, cols)
}

/// The starting value of a buffer, allocated fallibly.
pub(crate) fn start_value(
    name: &str,
    shape: &[usize],
    kind: BufferKind,
) -> Result<BufferValue, ShapeError> {
    match kind {
        BufferKind::Count => Ok(BufferValue::Count(0)),
        BufferKind::Values { fill, .. } => {
            let (rows, cols) = matrix_shape(shape);
            let mut m = crate::alloc::try_zeros(rows, cols, || {
                format!("buffer `{name}`, shape {}", Dims(shape))
            })?;
            if fill != 0.0 {
                m.fill(fill);
            }
            Ok(BufferValue::Values(m))
        }
    }
}

/// What a kernel is told about the pass it runs in (see
/// [`Kernel::forward_with`](super::Kernel::forward_with)): its [`Mode`], its layer's buffers,
/// a random stream for this layer in this training step, and, in training, the new values of
/// its buffers that the next optimizer step writes.
///
/// # Example
/// ```
/// use lazynet::layer::{Mode, Pass};
///
/// let pass = Pass::eval(&[]);
/// assert_eq!(pass.mode(), Mode::Eval);
/// ```
pub struct Pass<'a> {
    pub(crate) mode: Mode,
    pub(crate) buffers: &'a [Buffer],
    pub(crate) updates: Vec<Option<BufferValue>>,
    pub(crate) seed: u64,
    pub(crate) step: u64,
    pub(crate) path: &'a str,
}

impl fmt::Debug for Pass<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pass")
            .field("mode", &self.mode)
            .field("path", &self.path)
            .field("step", &self.step)
            .field("buffers", &self.buffers.len())
            .finish()
    }
}

impl<'a> Pass<'a> {
    /// An inference pass over a layer holding `buffers`: for testing a kernel on its own.
    pub fn eval(buffers: &'a [Buffer]) -> Self {
        Pass::new(Mode::Eval, buffers, 0, 0, "")
    }

    /// A training pass over a layer holding `buffers`, its random stream keyed by `seed` and
    /// `step`: for testing a kernel on its own.
    pub fn train(buffers: &'a [Buffer], seed: u64, step: u64) -> Self {
        Pass::new(Mode::Train, buffers, seed, step, "")
    }

    pub(crate) fn new(
        mode: Mode,
        buffers: &'a [Buffer],
        seed: u64,
        step: u64,
        path: &'a str,
    ) -> Self {
        Pass {
            mode,
            buffers,
            updates: Vec::new(),
            seed,
            step,
            path,
        }
    }

    /// Training or inference.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The layer's buffers, in the order of [`Layer::buffers`](super::Layer::buffers), as the
    /// pass found them (for a layer used at several places, as its earlier places in this
    /// pass left them).
    pub fn buffers(&self) -> &[Buffer] {
        self.buffers
    }

    /// A random stream for this layer in this training step: the same in the forward and the
    /// backward pass of one step (so a kernel draws a dropout mask in one and draws it again
    /// in the other), another in the next step, and fixed by the net's seed, so a training
    /// run is reproducible bit for bit.
    pub fn rng(&self) -> InitRng {
        InitRng::new(
            self.seed,
            &format!("pass {} at step {}", self.path, self.step),
        )
    }

    /// Records a new value for buffer `index`, written into the net by the next optimizer
    /// step (a pass never changes the net). Only in training.
    ///
    /// # Errors
    /// [`ShapeError::Contract`] in an inference pass, for an index past the buffers, or for a
    /// value that does not fit the buffer (another shape or kind, a negative count). Values
    /// outside a buffer's range (a variance the pass computed as NaN from a NaN input, or
    /// below 0) are recorded: the optimizer's step refuses them
    /// ([`TrainError::BufferOutOfRange`](crate::TrainError::BufferOutOfRange)).
    pub fn set_buffer(&mut self, index: usize, value: BufferValue) -> Result<(), ShapeError> {
        let contract = |detail: String| ShapeError::Contract {
            what: format!("a kernel's pass at layer {}", self.path),
            detail,
        };
        if self.mode != Mode::Train {
            return Err(contract("an inference pass cannot change a buffer".into()));
        }
        let Some(buffer) = self.buffers.get(index) else {
            return Err(contract(format!(
                "buffer {index} was set but the layer has {}",
                self.buffers.len()
            )));
        };
        buffer
            .check_values(&value, false)
            .map_err(|e| contract(format!("buffer `{}`: {e}", buffer.name)))?;
        if self.updates.len() < self.buffers.len() {
            self.updates.resize(self.buffers.len(), None);
        }
        if let Some(slot) = self.updates.get_mut(index) {
            *slot = Some(value);
        }
        Ok(())
    }

    /// The new value recorded for buffer `index`, if any.
    pub fn updated(&self, index: usize) -> Option<&BufferValue> {
        self.updates.get(index).and_then(Option::as_ref)
    }
}
