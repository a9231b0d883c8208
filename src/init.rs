//! Initializers: how parameters get their first values.
//!
//! An initializer is registered on an unbound net with
//! [`Net::initialize`](crate::Net::initialize), before any shape is known, and runs once per
//! parameter when the net is bound, seeing the parameter's name and shape.
//!
//! Every parameter draws from its own random stream, derived from the net's seed and the
//! parameter's name. So for one seed the weights are bit-identical however the net was bound
//! (statically, at run time, through `forward_init`, or declared eagerly with `with_input`),
//! and a layer's weights do not change when another layer's shape does.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// What a parameter is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// A weight matrix (`0.weight`).
    Weight,
    /// A bias vector (`0.bias`).
    Bias,
    /// Another learnable parameter, named by its suffix: `Role::Named("gain")` is `0.gain`.
    /// Initializers that tell weights from biases ([`WeightBias`], the fan-based ones) treat
    /// it as a weight; one of your own can tell it by [`ParamInfo::name`].
    Named(&'static str),
    /// A normalization's scale (`3.weight` of a [`BatchNorm`](crate::layer::BatchNorm) or
    /// [`LayerNorm`](crate::layer::LayerNorm)). It starts at 1, as in PyTorch, whatever
    /// initializer the net has: initializers are not called for it.
    Scale,
    /// A normalization's shift (`3.bias`). It starts at 0, as in PyTorch, whatever initializer
    /// the net has: initializers are not called for it.
    Shift,
}

impl Role {
    /// The suffix of the parameter's name: `"weight"`, `"bias"` or the given one.
    pub fn suffix(self) -> &'static str {
        match self {
            Role::Weight => "weight",
            Role::Bias => "bias",
            Role::Named(suffix) => suffix,
            Role::Scale => "weight",
            Role::Shift => "bias",
        }
    }

    /// The name of this parameter of layer `index`, PyTorch `nn.Sequential` style: `0.weight`.
    pub fn param_name(self, index: usize) -> String {
        format!("{index}.{}", self.suffix())
    }
}

pub use crate::partial::Dims;

/// What an initializer is told about the parameter it fills.
#[derive(Clone, Copy, Debug)]
pub struct ParamInfo<'a> {
    pub(crate) name: &'a str,
    pub(crate) shape: &'a [usize],
    pub(crate) role: Role,
    pub(crate) fan_in: usize,
    pub(crate) fan_out: usize,
}

impl<'a> ParamInfo<'a> {
    /// Describes a parameter; useful to test an initializer of your own.
    pub fn new(
        name: &'a str,
        shape: &'a [usize],
        role: Role,
        fan_in: usize,
        fan_out: usize,
    ) -> Self {
        ParamInfo {
            name,
            shape,
            role,
            fan_in,
            fan_out,
        }
    }

    /// The parameter's name, PyTorch `nn.Sequential` style: `"0.weight"`, `"2.bias"`.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// Its shape in PyTorch order; displays as `(256, 20)`.
    pub fn shape(&self) -> Dims<'a> {
        Dims(self.shape)
    }

    /// Whether it is a weight or a bias.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The number of inputs of the layer it belongs to.
    pub fn fan_in(&self) -> usize {
        self.fan_in
    }

    /// The number of outputs of the layer it belongs to.
    pub fn fan_out(&self) -> usize {
        self.fan_out
    }

    /// The number of values it holds. A shape whose product passes `usize::MAX` (which no
    /// parameter of a bound net has, since it could not be allocated) counts `usize::MAX`.
    pub fn len(&self) -> usize {
        if self.shape.contains(&0) {
            return 0;
        }
        self.shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .unwrap_or(usize::MAX)
    }

    /// Whether it holds no values (never, for parameters of a bound net).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The random numbers an initializer draws from: one seeded stream per parameter.
///
/// Built on ChaCha8, whose output is fixed for a seed on every platform and release.
#[derive(Clone, Debug)]
pub struct InitRng(ChaCha8Rng);

impl InitRng {
    /// The stream for the parameter `name` of a net seeded with `seed`.
    pub fn new(seed: u64, name: &str) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(fnv1a(name.as_bytes()));
        InitRng(rng)
    }

    /// A number drawn uniformly from `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A number drawn uniformly from `[low, high)`; `low` when they are equal, and from
    /// `(high, low]` when `low > high`. NaN or infinite bounds give NaN or infinite numbers:
    /// [`Uniform::new`] refuses them.
    pub fn uniform(&mut self, low: f32, high: f32) -> f32 {
        let (l, h) = (f64::from(low), f64::from(high));
        let x = (l + (h - l) * self.next_f64()) as f32;
        // Rounding to `f32` can reach `high`, which the half-open range leaves out.
        if x >= high && low < high {
            high.next_down().max(low)
        } else {
            x
        }
    }

    /// A number drawn from the normal distribution with this mean and standard deviation.
    pub fn normal(&mut self, mean: f32, std: f32) -> f32 {
        (f64::from(mean) + f64::from(std) * self.standard_normal()) as f32
    }

    /// A draw from N(0, 1), in `f64`.
    fn standard_normal(&mut self) -> f64 {
        // Box-Muller; 1 - u lies in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (core::f64::consts::TAU * u2).cos()
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Fills parameters with their first values.
///
/// Implement it to choose values yourself; [`init`](Initializer::init) runs once per
/// parameter, in order (`0.weight`, `0.bias`, `2.weight`, …), when the net is bound.
/// `values` holds the parameter's [`len`](ParamInfo::len) numbers in storage order; draw
/// random numbers from `rng` so that the seed decides them.
///
/// # Example
///
/// MXNet's `MyInit` from the d2l.ai chapter: report, then draw from U(-10, 10) and zero every
/// value below 5 in magnitude.
/// ```
/// use lazynet::prelude::*;
///
/// struct MyInit;
///
/// impl Initializer for MyInit {
///     fn init(&self, param: &ParamInfo<'_>, rng: &mut InitRng, values: &mut [f32]) {
///         println!("Init {} {}", param.name(), param.shape());
///         for v in values {
///             let x = rng.uniform(-10.0, 10.0);
///             *v = if x.abs() >= 5.0 { x } else { 0.0 };
///         }
///     }
/// }
///
/// let net = Net::new().push(Dense::<U4>::new()).initialize(MyInit).bind::<U3>();
/// let (_, w) = net.named_params().next().ok_or("no parameters")?;
/// assert!(w.iter().all(|v| *v == 0.0 || v.abs() >= 5.0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Initializer: Send + Sync {
    /// Fills one parameter.
    fn init(&self, param: &ParamInfo<'_>, rng: &mut InitRng, values: &mut [f32]);
}

impl<T: Initializer + ?Sized> Initializer for Box<T> {
    fn init(&self, param: &ParamInfo<'_>, rng: &mut InitRng, values: &mut [f32]) {
        (**self).init(param, rng, values);
    }
}

impl<T: Initializer + ?Sized> Initializer for std::sync::Arc<T> {
    fn init(&self, param: &ParamInfo<'_>, rng: &mut InitRng, values: &mut [f32]) {
        (**self).init(param, rng, values);
    }
}

/// The initializer a net has when none is registered: PyTorch's `nn.Linear` default,
/// U(−1/√in, 1/√in) for weights and biases alike.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DefaultInit;

impl Initializer for DefaultInit {
    fn init(&self, param: &ParamInfo<'_>, rng: &mut InitRng, values: &mut [f32]) {
        let bound = 1.0 / (param.fan_in.max(1) as f32).sqrt();
        values
            .iter_mut()
            .for_each(|v| *v = rng.uniform(-bound, bound));
    }
}

/// Sets every value to zero.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Zeros;

impl Initializer for Zeros {
    fn init(&self, _: &ParamInfo<'_>, _: &mut InitRng, values: &mut [f32]) {
        values.fill(0.0);
    }
}

/// Sets every value to the number it holds, whatever it is (as PyTorch's `constant_`, NaN and
/// infinities included).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Constant(pub f32);

/// An initializer's settings that describe no distribution: a NaN or negative standard
/// deviation, reversed or infinite bounds, a NaN, infinite or negative gain. The constructors
/// ([`Uniform::new`], [`Normal::new`], [`XavierUniform::with_gain`], …) return it, so an
/// initializer that exists never draws NaN, and a uniform one never leaves its range. (A
/// spread near `f32::MAX`, such as `Normal::new(0.0, f32::MAX)`, draws some values past
/// `f32::MAX`, which are infinite, as in PyTorch.)
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// `Uniform::new(low, high)` with a bound that is not finite, or `low > high`.
    #[error("a uniform distribution needs finite bounds with low <= high, got low {low} and high {high}")]
    Bounds {
        /// The lower bound given.
        low: f32,
        /// The upper bound given.
        high: f32,
    },
    /// `Normal::new(mean, std)` with a mean that is not finite.
    #[error("a normal distribution needs a finite mean, got {mean}")]
    Mean {
        /// The mean given.
        mean: f32,
    },
    /// `Normal::new(mean, std)` with a standard deviation that is NaN, infinite or negative.
    #[error("a normal distribution needs a finite standard deviation >= 0, got {std}")]
    Std {
        /// The standard deviation given.
        std: f32,
    },
    /// A gain that is NaN, infinite or negative.
    #[error("the gain of {initializer} must be finite and >= 0, got {gain}")]
    Gain {
        /// The initializer: `"XavierUniform"`, `"KaimingNormal"`, …
        initializer: &'static str,
        /// The gain given.
        gain: f32,
    },
}

impl Initializer for Constant {
    fn init(&self, _: &ParamInfo<'_>, _: &mut InitRng, values: &mut [f32]) {
        values.fill(self.0);
    }
}

/// Draws every value from U(low, high): every value `v` has `low <= v < high` (or is `low`
/// when the bounds are equal).
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let init = Uniform::new(-0.5, 0.5)?;
/// let net = Net::new().push(Dense::<U8>::new()).initialize(init).bind::<U4>();
/// assert!(net.named_params().all(|(_, p)| p.iter().all(|v| (-0.5..0.5).contains(v))));
/// assert!(Uniform::new(1.0, -1.0).is_err());
/// assert!(Uniform::new(0.0, f32::INFINITY).is_err());
/// # Ok::<(), InitError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Uniform {
    low: f32,
    high: f32,
}

impl Uniform {
    /// U(low, high).
    ///
    /// # Errors
    /// [`InitError::Bounds`] when a bound is NaN or infinite, or `low > high`.
    pub fn new(low: f32, high: f32) -> Result<Self, InitError> {
        if low.is_finite() && high.is_finite() && low <= high {
            Ok(Uniform { low, high })
        } else {
            Err(InitError::Bounds { low, high })
        }
    }

    /// The lower bound.
    pub fn low(&self) -> f32 {
        self.low
    }

    /// The upper bound.
    pub fn high(&self) -> f32 {
        self.high
    }
}

impl Initializer for Uniform {
    fn init(&self, _: &ParamInfo<'_>, rng: &mut InitRng, values: &mut [f32]) {
        values
            .iter_mut()
            .for_each(|v| *v = rng.uniform(self.low, self.high));
    }
}

/// Draws every value from N(mean, std²).
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let mut net = Net::new().push(Dense::<U8>::new()).bind::<U4>();
/// net.reinitialize(Normal::new(0.0, 0.01)?)?;
/// assert!(Normal::new(0.0, f32::NAN).is_err());
/// assert!(Normal::new(0.0, -1.0).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normal {
    mean: f32,
    std: f32,
}

impl Normal {
    /// N(mean, std²).
    ///
    /// # Errors
    /// [`InitError::Mean`] when the mean is NaN or infinite; [`InitError::Std`] when the
    /// standard deviation is NaN, infinite or negative.
    pub fn new(mean: f32, std: f32) -> Result<Self, InitError> {
        if !mean.is_finite() {
            return Err(InitError::Mean { mean });
        }
        if !(std.is_finite() && std >= 0.0) {
            return Err(InitError::Std { std });
        }
        Ok(Normal { mean, std })
    }

    /// The mean.
    pub fn mean(&self) -> f32 {
        self.mean
    }

    /// The standard deviation.
    pub fn std(&self) -> f32 {
        self.std
    }
}

impl Initializer for Normal {
    fn init(&self, _: &ParamInfo<'_>, rng: &mut InitRng, values: &mut [f32]) {
        values
            .iter_mut()
            .for_each(|v| *v = rng.normal(self.mean, self.std));
    }
}

macro_rules! fan_init {
    ($(#[$doc:meta])* $name:ident, $gain:expr, |$p:ident, $g:ident, $rng:ident| $draw:expr) => {
        $(#[$doc])*
        ///
        /// Biases are set to zero, as Gluon and Keras do; combine with [`WeightBias`] to choose
        /// otherwise.
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $name {
            gain: f32,
        }

        impl Default for $name {
            fn default() -> Self {
                $name { gain: $gain }
            }
        }

        impl $name {
            /// With another gain.
            ///
            /// # Errors
            /// [`InitError::Gain`] when the gain is NaN, infinite or negative.
            pub fn with_gain(gain: f32) -> Result<Self, InitError> {
                if gain.is_finite() && gain >= 0.0 {
                    Ok($name { gain })
                } else {
                    Err(InitError::Gain {
                        initializer: stringify!($name),
                        gain,
                    })
                }
            }

            /// The gain that scales the spread.
            pub fn gain(&self) -> f32 {
                self.gain
            }
        }

        impl Initializer for $name {
            fn init(&self, $p: &ParamInfo<'_>, $rng: &mut InitRng, values: &mut [f32]) {
                if $p.role == Role::Bias {
                    values.fill(0.0);
                    return;
                }
                let $g = self.gain;
                values.iter_mut().for_each(|v| *v = $draw);
            }
        }
    };
}

/// `fan_in + fan_out`, at least 1, without overflow.
fn fan_sum(p: &ParamInfo<'_>) -> f64 {
    (p.fan_in as f64 + p.fan_out as f64).max(1.0)
}

/// A draw from U(−b, b) for the spread `b = gain·√(scale)`, computed in `f32` (the values
/// every seed has always given) unless that overflows, then in `f64`: a gain near `f32::MAX`
/// gives infinite values, never NaN (`U(−inf, inf)` would).
fn symmetric_uniform(rng: &mut InitRng, gain: f32, scale: f64) -> f32 {
    let b = gain * (scale as f32).sqrt();
    if b.is_finite() {
        return rng.uniform(-b, b);
    }
    let b = f64::from(gain) * scale.sqrt();
    ((2.0 * rng.next_f64() - 1.0) * b) as f32
}

/// A draw from N(0, s²) for `s = gain·√(scale)`, in `f32` unless that overflows, as
/// [`symmetric_uniform`].
fn centred_normal(rng: &mut InitRng, gain: f32, scale: f64) -> f32 {
    let s = gain * (scale as f32).sqrt();
    if s.is_finite() {
        return rng.normal(0.0, s);
    }
    (f64::from(gain) * scale.sqrt() * rng.standard_normal()) as f32
}

fan_init!(
    /// Glorot & Bengio (2010), uniform: U(±gain·√(6 / (in + out))). Default gain 1.
    XavierUniform, 1.0,
    |p, g, rng| symmetric_uniform(rng, g, 6.0 / fan_sum(p))
);
fan_init!(
    /// Glorot & Bengio (2010), normal: N(0, gain²·2 / (in + out)). Default gain 1.
    XavierNormal, 1.0,
    |p, g, rng| centred_normal(rng, g, 2.0 / fan_sum(p))
);
fan_init!(
    /// He et al. (2015), uniform: U(±gain·√(3 / in)). Default gain √2, for ReLU.
    KaimingUniform, core::f32::consts::SQRT_2,
    |p, g, rng| symmetric_uniform(rng, g, 3.0 / p.fan_in.max(1) as f64)
);
fan_init!(
    /// He et al. (2015), normal: N(0, gain² / in). Default gain √2, for ReLU.
    KaimingNormal, core::f32::consts::SQRT_2,
    |p, g, rng| centred_normal(rng, g, 1.0 / p.fan_in.max(1) as f64)
);

/// One initializer for weights, another for biases.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let net = Net::new()
///     .push(Dense::<U8>::new())
///     .initialize(WeightBias::new(XavierUniform::default(), Constant(0.1)))
///     .bind::<U4>();
/// let bias = net.named_params().nth(1).ok_or("no bias")?.1;
/// assert!(bias.iter().all(|b| *b == 0.1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WeightBias<W, B> {
    /// For weights.
    pub weight: W,
    /// For biases.
    pub bias: B,
}

impl<W, B> WeightBias<W, B> {
    /// `weight` for weights, `bias` for biases.
    pub fn new(weight: W, bias: B) -> Self {
        WeightBias { weight, bias }
    }
}

impl<W: Initializer, B: Initializer> Initializer for WeightBias<W, B> {
    fn init(&self, param: &ParamInfo<'_>, rng: &mut InitRng, values: &mut [f32]) {
        match param.role {
            Role::Bias => self.bias.init(param, rng, values),
            Role::Weight | Role::Named(_) | Role::Scale => self.weight.init(param, rng, values),
            Role::Shift => self.bias.init(param, rng, values),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(
        init: &dyn Initializer,
        role: Role,
        fan_in: usize,
        fan_out: usize,
        n: usize,
    ) -> Vec<f32> {
        let shape = [n];
        let p = ParamInfo::new("0.weight", &shape, role, fan_in, fan_out);
        let mut v = vec![f32::NAN; n];
        init.init(&p, &mut InitRng::new(7, p.name()), &mut v);
        v
    }

    #[test]
    fn shapes_display_as_python_tuples() {
        assert_eq!(Dims(&[256, 20]).to_string(), "(256, 20)");
        assert_eq!(Dims(&[256]).to_string(), "(256,)");
        assert_eq!(Dims(&[]).to_string(), "()");
    }

    #[test]
    fn streams_depend_on_seed_and_name_only() {
        let draw = |seed, name| InitRng::new(seed, name).next_f64();
        assert_eq!(draw(1, "0.weight"), draw(1, "0.weight"));
        assert_ne!(draw(1, "0.weight"), draw(2, "0.weight"));
        assert_ne!(draw(1, "0.weight"), draw(1, "0.bias"));
    }

    #[test]
    fn default_init_is_pytorch_linear_bound() {
        let v = fill(&DefaultInit, Role::Weight, 16, 4, 10_000);
        assert!(v.iter().all(|x| x.abs() <= 0.25));
        assert!(
            v.iter().any(|x| x.abs() > 0.24),
            "draws should reach near the bound"
        );
    }

    #[test]
    fn uniform_and_normal_have_their_moments() {
        let v = fill(&Uniform::new(2.0, 4.0).unwrap(), Role::Weight, 1, 1, 20_000);
        assert!(v.iter().all(|x| (2.0..4.0).contains(x)));
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean - 3.0).abs() < 0.02, "mean {mean}");

        let v = fill(&Normal::new(1.0, 0.5).unwrap(), Role::Weight, 1, 1, 20_000);
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
        assert!((mean - 1.0).abs() < 0.02, "mean {mean}");
        assert!((var.sqrt() - 0.5).abs() < 0.02, "std {}", var.sqrt());
    }

    #[test]
    fn fan_initializers_respect_their_bounds_and_zero_biases() {
        let b = (6.0f32 / 30.0).sqrt();
        assert!(fill(&XavierUniform::default(), Role::Weight, 10, 20, 5000)
            .iter()
            .all(|x| x.abs() <= b));
        let b = 2f32.sqrt() * (3.0f32 / 10.0).sqrt();
        assert!(fill(&KaimingUniform::default(), Role::Weight, 10, 20, 5000)
            .iter()
            .all(|x| x.abs() <= b));
        for init in [
            &XavierUniform::default() as &dyn Initializer,
            &XavierNormal::default(),
            &KaimingUniform::default(),
            &KaimingNormal::default(),
        ] {
            assert!(fill(init, Role::Bias, 10, 20, 50).iter().all(|x| *x == 0.0));
        }
    }

    #[test]
    fn nonsense_settings_are_refused() {
        for (low, high) in [
            (1.0, -1.0),
            (f32::NAN, 1.0),
            (0.0, f32::INFINITY),
            (f32::NEG_INFINITY, 0.0),
        ] {
            assert!(
                matches!(Uniform::new(low, high), Err(InitError::Bounds { .. })),
                "{low} {high}"
            );
        }
        assert_eq!(
            Uniform::new(1.0, 1.0).map(|u| (u.low(), u.high())),
            Ok((1.0, 1.0))
        );
        for std in [f32::NAN, -1.0, f32::INFINITY, -0.5] {
            assert!(
                matches!(Normal::new(0.0, std), Err(InitError::Std { .. })),
                "{std}"
            );
        }
        assert!(matches!(
            Normal::new(f32::NAN, 1.0),
            Err(InitError::Mean { .. })
        ));
        assert!(Normal::new(0.0, 0.0).is_ok());
        for gain in [f32::NAN, -1.0, f32::INFINITY] {
            assert!(XavierUniform::with_gain(gain).is_err());
            assert!(XavierNormal::with_gain(gain).is_err());
            assert!(KaimingUniform::with_gain(gain).is_err());
            assert!(KaimingNormal::with_gain(gain).is_err());
        }
        assert_eq!(
            KaimingNormal::with_gain(f32::NAN).unwrap_err().to_string(),
            "the gain of KaimingNormal must be finite and >= 0, got NaN"
        );
        assert_eq!(
            Normal::new(0.0, -1.0).unwrap_err().to_string(),
            "a normal distribution needs a finite standard deviation >= 0, got -1"
        );
    }

    #[test]
    fn huge_spreads_draw_infinities_never_nan() {
        let huge: [&dyn Initializer; 5] = [
            &XavierUniform::with_gain(f32::MAX).unwrap(),
            &XavierNormal::with_gain(f32::MAX).unwrap(),
            &KaimingUniform::with_gain(f32::MAX).unwrap(),
            &KaimingNormal::with_gain(f32::MAX).unwrap(),
            &Normal::new(f32::MAX, f32::MAX).unwrap(),
        ];
        for (i, init) in huge.into_iter().enumerate() {
            let v = fill(init, Role::Weight, 1, 1, 4096);
            assert!(v.iter().all(|x| !x.is_nan()), "initializer {i} drew NaN");
            assert!(
                v.iter().any(|x| x.is_infinite()),
                "initializer {i}: no infinity"
            );
        }
        // Fans whose sum passes usize::MAX.
        let v = fill(
            &XavierUniform::default(),
            Role::Weight,
            usize::MAX,
            usize::MAX,
            16,
        );
        assert!(v.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn uniform_draws_stay_below_the_upper_bound() {
        // A range so narrow that rounding the draw to `f32` often reaches `high`.
        let (low, high) = (1.0f32, 1.0f32.next_up());
        let v = fill(
            &Uniform::new(low, high).unwrap(),
            Role::Weight,
            1,
            1,
            10_000,
        );
        assert!(
            v.iter().all(|x| *x == low),
            "a draw reached the excluded upper bound"
        );
        let mut rng = InitRng::new(0, "x");
        assert_eq!(rng.uniform(3.0, 3.0), 3.0);
    }

    #[test]
    fn weight_bias_dispatches_on_role() {
        let init = WeightBias::new(Constant(1.0), Zeros);
        assert!(fill(&init, Role::Weight, 1, 1, 5).iter().all(|x| *x == 1.0));
        assert!(fill(&init, Role::Bias, 1, 1, 5).iter().all(|x| *x == 0.0));
    }
}
