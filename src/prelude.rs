//! What a user needs for the common case: `use lazynet::prelude::*;`.

pub use crate::batch::Batch;
pub use crate::dim::{Dim, Dyn, StaticDim};
pub use crate::error::ShapeError;
pub use crate::init::{
    Constant, DefaultInit, InitRng, Initializer, KaimingNormal, KaimingUniform, Normal, ParamInfo,
    Role, Uniform, WeightBias, XavierNormal, XavierUniform, Zeros,
};
pub use crate::layer::{Dense, Identity, Relu, Sigmoid, Tanh};
pub use crate::net::Net;
pub use crate::state::{Init, Uninit};
pub use generic_array::GenericArray;
pub use typenum::consts::*;
