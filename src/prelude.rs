//! What a user needs for the common case: `use lazynet::prelude::*;`.

pub use crate::batch::Batch;
pub use crate::data::{shuffle, stratified_split, train_test_split, Split, Standardize};
pub use crate::dim::{Dim, Dyn, StaticDim};
pub use crate::error::ShapeError;
pub use crate::init::{
    Constant, DefaultInit, InitError, InitRng, Initializer, KaimingNormal, KaimingUniform, Normal,
    ParamInfo, Role, Uniform, WeightBias, XavierNormal, XavierUniform, Zeros,
};
pub use crate::layer::{
    AvgPool2d, BatchNorm, Conv2d, DeclareInput, Dense, Dropout, Flatten, Gelu, Identity, LayerNorm,
    LeakyRelu, MaxPool2d, Relu, Residual, Sequential, Shared, Sigmoid, Softmax, Tanh,
};
pub use crate::net::Net;
pub use crate::shape::{Image, Shape, StaticShape};
pub use crate::state::{Init, Uninit};
pub use crate::stems::Stems;
pub use crate::train::{
    Adam, Control, CrossEntropy, EarlyStopping, EpochMetrics, Fit, Grads, History, Hyper, Labels,
    Monitor, Mse, Optimizer, Progress, Schedule, Sgd, TrainError,
};
pub use crate::weights::{LoadError, LoadOptions, SaveError, Weights};
pub use generic_array::GenericArray;
pub use typenum::consts::*;
