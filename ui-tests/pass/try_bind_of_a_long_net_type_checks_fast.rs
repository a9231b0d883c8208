// Must compile, quickly: `try_bind` of a long declaration. Its bound once made the compiler
// search every layer's rules before it knew the input's type: 12 layers took 40 s and 3 GB to
// type-check, 18 more memory than the machine had. Now it is checked in linear time.
use lazynet::prelude::*;

fn main() -> Result<(), ShapeError> {
    let body = Net::new().push(Dense::dynamic(8)).push(Relu).push(Dense::dynamic(8));
    let net = Net::new()
        .push(Dense::dynamic(8))
        .push(Relu)
        .push(Dense::dynamic(8))
        .push(Relu)
        .push(Dense::dynamic(8))
        .push(Relu)
        .push(Dense::dynamic(8))
        .push(Relu)
        .push(Dense::dynamic(8))
        .push(Relu)
        .push(Dense::dynamic(8))
        .push(Relu)
        .push(Dense::dynamic(8))
        .push(Relu)
        .push(Dense::dynamic(8))
        .push(Relu)
        .push(Dense::dynamic(8))
        .push(Relu)
        .push(Dense::dynamic(8))
        .push(Relu)
        .push(Residual::new(body))
        .push(Dense::<U8>::new())
        .push(Tanh)
        .push(Dense::<U8>::new())
        .push(Tanh)
        .push(Dense::<U8>::new())
        .push(Tanh)
        .push(Dense::<U8>::new())
        .push(Tanh)
        .push(Dense::<U8>::new())
        .push(Tanh)
        .push(Dense::<U8>::new())
        .push(Tanh)
        .push(Dense::<U8>::new())
        .push(Tanh)
        .push(Dense::<U8>::new())
        .push(Tanh)
        .push(Dense::<U8>::new())
        .push(Tanh)
        .push(Dense::<U8>::new())
        .push(Tanh)
        .try_bind(4)?;
    assert_eq!(net.output_dims(), [8]);
    Ok(())
}
