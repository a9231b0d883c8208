// Must compile: a layer's compile-time half written by `shape_rule!` for each shape class, and
// `with_input` on a layer written outside the crate.
use lazynet::layer::{Fault, Kernel, Layer, PartialShape};
use lazynet::prelude::*;

macro_rules! identity_layer {
    ($name:ident) => {
        #[derive(Clone, Copy, Debug)]
        struct $name;
        impl Layer for $name {
            fn kind(&self) -> &'static str {
                stringify!($name)
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
    };
}

identity_layer!(AnyLayer);
identity_layer!(FlatLayer);
identity_layer!(ImageLayer);
lazynet::shape_rule!(AnyLayer, any -> same);
lazynet::shape_rule!(FlatLayer, flat -> same);
lazynet::shape_rule!(ImageLayer, image -> same);

fn main() {
    let _images = Net::new()
        .push(ImageLayer)
        .push(AnyLayer)
        .push(Flatten)
        .push(FlatLayer)
        .push(Dense::<U2>::new())
        .bind::<Image<U1, U4, U4>>();
    let _declared = Net::new()
        .push(FlatLayer.with_input::<U4>())
        .push(AnyLayer)
        .push(Dense::<U2>::new())
        .build();
}
