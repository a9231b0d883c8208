// Must compile: the quickstart's shapes, every way of binding, and the output types.
use lazynet::prelude::*;

fn main() -> Result<(), ShapeError> {
    let decl = Net::new().push(Dense::<U256>::new()).push(Relu).push(Dense::<U10>::new());
    let net: Net<Init<U20>, _> = decl.clone().bind::<U20>();
    let y: Batch<U10> = net.forward(&Batch::<U20>::zeros(2));
    let out: GenericArray<f32, U10> = net.predict(&GenericArray::<f32, U20>::default());
    let dyn_net: Net<Init<Dyn>, _> = decl.try_bind(20)?;
    let y2: Batch<U10> = dyn_net.try_forward(&Batch::<Dyn>::from_fn_dyn(20, 1, |_, _| 0.0))?;
    let _ = y;
    let (_n, _y3): (Net<Init<U20>, _>, Batch<U10>) = decl.forward_init(&Batch::<U20>::zeros(1));
    let (_n, _y4) = decl.forward_init(&Batch::<Dyn>::from_fn_dyn(20, 1, |_, _| 0.0))?;
    let eager: Net<Init<U20>, _> = Net::new().push(Dense::<U256>::with_input::<U20>()).push(Relu).push(Dense::<U10>::new()).build();
    let mixed = Net::new().push(Dense::dynamic(64)).push(Relu).push(Dense::<U10>::new()).bind::<U20>();
    let _: Batch<U10> = mixed.forward(&Batch::<U20>::zeros(1));
    let deep = Net::new().push(Dense::<U256>::new()).push(Dense::<U10>::with_input::<U256>()).bind::<U784>();
    let _: Batch<U10> = deep.forward(&Batch::<U784>::zeros(1));
    let _ = (out, y2, eager);
    Ok(())
}
