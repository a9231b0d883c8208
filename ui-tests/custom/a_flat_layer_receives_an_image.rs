// Must fail: a layer whose compile-time half says `flat -> same` receives an image; the error
// names the layer.
use lazynet::layer::{Fault, Kernel, Layer, PartialShape};
use lazynet::prelude::*;

#[derive(Clone, Copy, Debug)]
struct Gain;

impl Layer for Gain {
    fn kind(&self) -> &'static str {
        "Gain"
    }
    fn output_shape(&self, i: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        Ok(i.cloned())
    }
    fn param_shapes(&self, _: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        vec![]
    }
    fn kernel(&self, _: &[usize], _: &[usize]) -> Box<dyn Kernel> {
        Identity.kernel(&[], &[])
    }
}

lazynet::shape_rule!(Gain, flat -> same);

fn main() {
    let _net = Net::new()
        .push(Conv2d::<U4, U3>::new())
        .push(Gain)
        .bind::<Image<U1, U8, U8>>();
}
