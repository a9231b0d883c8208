//! The plan binding builds: every layer of a declaration, composite layers ([`Residual`],
//! [`Shared`]) opened into their parts, as a list of nodes in the order they run, each reading
//! the value of an earlier node (or the input).
//!
//! One walk serves both uses: describing a declaration before binding (shapes as far as they
//! are known, `?` elsewhere, never an error) and binding (every shape known and checked, a
//! [`ShapeError`] at the first that does not fit). The walk is not generic over the net's type.
//!
//! [`Residual`]: crate::layer::Residual
//! [`Shared`]: crate::layer::Shared

use std::sync::Arc;

use crate::error::ShapeError;
use crate::init::{Dims, Role};
use crate::layer::{Activation, Fault, Kernel, Layer, PartialShape, Parts};

/// Where a node reads its input: the net's input, or the value an earlier node gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Src {
    /// The net's input.
    Input,
    /// The output of node `k`.
    Node(usize),
}

/// What a planned node computes.
pub(crate) enum PlanOp {
    /// A layer's kernel (`None` when describing: no kernel is made before binding).
    Layer(Option<Arc<dyn Kernel>>),
    /// Adds the value of another node to its input: a residual block's sum.
    Add(Src),
}

/// A parameter as planned: its name, its shape as far as it is known, its role and the fans
/// its initializer sees.
pub(crate) struct Planned {
    pub(crate) name: String,
    pub(crate) shape: PartialShape,
    pub(crate) role: Role,
    pub(crate) fan_in: usize,
    pub(crate) fan_out: usize,
}

/// A planned node.
pub(crate) struct Node {
    /// Its place: `3`, or `2.0` inside the block at index 2; its parameters are
    /// `{path}.weight`, ….
    pub(crate) path: String,
    pub(crate) kind: &'static str,
    pub(crate) input: Src,
    /// Its output shape, as far as it is known (known when binding).
    pub(crate) output: Option<PartialShape>,
    pub(crate) op: PlanOp,
    /// The parameters it owns (none at a later place of a tied set).
    pub(crate) params: Vec<Planned>,
    /// The node whose parameters it computes with, at a later place of a tied set.
    pub(crate) tied: Option<usize>,
    /// The buffers it owns (none at a later place of a tied set): name, shape, kind.
    pub(crate) buffers: Vec<(String, PartialShape, crate::layer::BufferKind)>,
}

/// The first place of a tied set.
struct Tie {
    key: usize,
    /// The nodes of the first place (one for a single layer).
    nodes: core::ops::Range<usize>,
    /// Where the first place reads its input, and its shape.
    input: Flow,
    /// The first place's path.
    path: String,
}

/// The value a node passes on: where it is read, and its shape as far as it is known.
type Flow = (Src, Option<PartialShape>);

/// Plans a net; see the module's documentation.
pub(crate) struct Planner<'e> {
    binding: bool,
    expected: &'e [PartialShape],
    cursor: usize,
    pub(crate) nodes: Vec<Node>,
    ties: Vec<Tie>,
}

/// Whether a tensor of shape `dims` can be allocated and indexed: the product of its non-zero
/// sizes is at most [`MAX_VALUES`](crate::alloc::MAX_VALUES). Every partial product a kernel
/// computes from these sizes (a row, a plane, `in_c·k·k`) is then at most that, so none
/// overflows.
pub(crate) fn fits(dims: &[usize]) -> bool {
    dims.iter()
        .filter(|&&d| d != 0)
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .is_some_and(|n| n <= crate::alloc::MAX_VALUES)
}

/// The error of a layer whose run-time rule breaks the [`Layer`] trait's contract, or
/// contradicts its compile-time half.
fn contradicts(index: usize, kind: &str, detail: String) -> ShapeError {
    ShapeError::Contract {
        what: format!("layer {index} ({kind})"),
        detail,
    }
}

/// A shape when it is fully known.
pub(crate) fn known(shape: &Option<PartialShape>) -> Option<Vec<usize>> {
    shape.as_ref().and_then(PartialShape::known)
}

/// Whether a run-time shape is one the compiler's partial shape allows: the same rank, and
/// every size the compiler knows the same.
fn agrees(run_time: &[usize], compile_time: &PartialShape) -> bool {
    run_time.len() == compile_time.0.len()
        && run_time
            .iter()
            .zip(&compile_time.0)
            .all(|(r, c)| c.is_none_or(|c| c == *r))
}

impl<'e> Planner<'e> {
    /// A planner that describes a declaration: shapes as far as they are known, no error.
    pub(crate) fn describing() -> Self {
        Planner {
            binding: false,
            expected: &[],
            cursor: 0,
            nodes: Vec::new(),
            ties: Vec::new(),
        }
    }

    /// A planner that binds: every shape must be known and fit, and each layer's output must
    /// agree with `expected`, the output shapes the compiler computed, in the order the plan
    /// visits layers (a composite before its parts).
    pub(crate) fn binding(expected: &'e [PartialShape]) -> Self {
        Planner {
            binding: true,
            expected,
            cursor: 0,
            nodes: Vec::new(),
            ties: Vec::new(),
        }
    }

    /// Checks the layers planned next against `expected` (as [`binding`](Planner::binding)).
    pub(crate) fn compare_with(&mut self, expected: &'e [PartialShape]) {
        self.expected = expected;
        self.cursor = 0;
    }

    /// Plans the nodes `range` again, as later places of the parameters they own (or share),
    /// reading `input` where they read `from`: a trunk run after another stem.
    pub(crate) fn replay(
        &mut self,
        range: core::ops::Range<usize>,
        from: Src,
        input: Src,
        rename: Option<(&str, &str)>,
    ) {
        let offset = self.nodes.len();
        let start = range.start;
        let map = |src: Src| match src {
            s if s == from => input,
            Src::Node(k) if range.contains(&k) => Src::Node(offset + (k - start)),
            other => other,
        };
        for k in range.clone() {
            let Some(node) = self.nodes.get(k) else {
                continue;
            };
            let op = match &node.op {
                PlanOp::Layer(kernel) => PlanOp::Layer(kernel.clone()),
                PlanOp::Add(src) => PlanOp::Add(map(*src)),
            };
            let owns = !node.params.is_empty() || !node.buffers.is_empty() || node.tied.is_some();
            // A later place of a tied block is named as its own place: `4.0` for `2.0`.
            let path = match rename {
                Some((old, new)) if node.path == old => new.to_owned(),
                Some((old, new)) => match node.path.strip_prefix(old) {
                    Some(rest) if rest.starts_with('.') => format!("{new}{rest}"),
                    _ => node.path.clone(),
                },
                None => node.path.clone(),
            };
            let replayed = Node {
                path,
                kind: node.kind,
                input: map(node.input),
                output: node.output.clone(),
                op,
                params: Vec::new(),
                tied: owns.then(|| node.tied.unwrap_or(k)),
                buffers: Vec::new(),
            };
            self.nodes.push(replayed);
        }
    }

    /// Checks the names given to the `count` layers of a block at `path` (and to its
    /// projection, `extra`): each one part of a path (not empty, no dot), no two alike, no
    /// more names than layers. Only when binding: describing never fails.
    pub(crate) fn check_names(
        &self,
        block: &'static str,
        path: &str,
        names: &[String],
        count: usize,
        extra: Option<&str>,
    ) -> Result<(), ShapeError> {
        if !self.binding {
            return Ok(());
        }
        let error = |name: &str, reason: &'static str| ShapeError::BlockName {
            block,
            layer: path.to_owned(),
            name: name.to_owned(),
            reason,
        };
        let bad = names
            .iter()
            .map(String::as_str)
            .chain(extra)
            .find(|n| n.is_empty() || n.contains('.'));
        if let Some(name) = bad {
            return Err(error(
                name,
                "a name is one part of a parameter's path: not empty, and without a dot",
            ));
        }
        // Every layer of the block, and the projection, has a name of its own.
        let placed: Vec<String> = (0..count)
            .map(|j| names.get(j).cloned().unwrap_or_else(|| j.to_string()))
            .chain(extra.map(str::to_owned))
            .collect();
        let clash = placed
            .iter()
            .enumerate()
            .find(|(j, n)| placed.get(..*j).is_some_and(|before| before.contains(n)));
        if let Some((_, name)) = clash {
            return Err(error(
                name,
                if block == "residual block" {
                    "two layers of the block (or a layer and the projection) have this name"
                } else {
                    "two layers have this name"
                },
            ));
        }
        if let Some(past) = names.get(count..).filter(|p| !p.is_empty()) {
            return Err(error(&past.join(", "), "there are more names than layers"));
        }
        Ok(())
    }

    /// Plans `layers` one after the other from `input`, naming layer `j` `{prefix}{names[j]}`
    /// (`{prefix}{j}` past the names given).
    pub(crate) fn seq(
        &mut self,
        layers: &[&dyn Layer],
        prefix: &str,
        names: &[String],
        input: Flow,
    ) -> Result<Flow, ShapeError> {
        let mut flow = input;
        for (index, layer) in layers.iter().enumerate() {
            let path = match names.get(index) {
                Some(name) => format!("{prefix}{name}"),
                None => format!("{prefix}{index}"),
            };
            flow = self.layer(*layer, index, path, flow)?;
        }
        Ok(flow)
    }

    /// The compile-time output shape of the next layer the plan visits.
    fn take_expected(&mut self) -> Option<PartialShape> {
        let expected = self.expected.get(self.cursor).cloned();
        self.cursor += 1;
        expected
    }

    fn push(&mut self, node: Node) -> Src {
        self.nodes.push(node);
        Src::Node(self.nodes.len() - 1)
    }

    /// Plans one layer, the `index`-th of its sequence, at `path`.
    fn layer(
        &mut self,
        layer: &dyn Layer,
        index: usize,
        path: String,
        flow: Flow,
    ) -> Result<Flow, ShapeError> {
        // A composite layer that declares its input (`with_input`) is checked here: its
        // parts never see the declaration.
        let parts = layer.parts();
        let mut flow = flow;
        if let (false, Some(expected)) = (matches!(parts, Parts::Leaf), layer.declared_input()) {
            let fault = match flow.1.as_ref().map(|s| s.0.as_slice()) {
                Some([Some(actual)]) if *actual != expected => Some(Fault::DeclaredInput {
                    expected,
                    actual: *actual,
                }),
                Some([_]) | None => None,
                Some(_) => Some(Fault::Rank {
                    needs: "a flat input (it declares its input size)",
                    found: flow
                        .1
                        .as_ref()
                        .map(PartialShape::or_zero)
                        .unwrap_or_default(),
                }),
            };
            match fault {
                Some(fault) if self.binding => return Err(fault.at(index, layer.kind())),
                // Before binding, the parts see the declared width.
                _ => flow.1 = Some(PartialShape::from_dims(&[expected])),
            }
        }
        match parts {
            block @ Parts::Residual { .. } => self.residual(index, path, flow, block),
            Parts::Seq { body, names } => {
                let expected = self.take_expected();
                self.check_names("sequential block", &path, names, body.len(), None)?;
                let out = self
                    .seq(&body, &format!("{path}."), names, flow.clone())
                    .map_err(|source| ShapeError::InBlock {
                        layer: path.clone(),
                        kind: "Sequential",
                        branch: "its layers",
                        source: Box::new(source),
                    })?;
                if self.binding {
                    let input = known(&flow.1).unwrap_or_default();
                    let output = known(&out.1).unwrap_or_default();
                    self.check_expected(index, "Sequential", expected.as_ref(), &input, &output)?;
                }
                Ok(out)
            }
            Parts::Shared { key, layer: inner } => {
                match self.ties.iter().position(|t| t.key == key) {
                    Some(tie) => self.tied(layer.kind(), path, flow, tie),
                    None => {
                        let start = self.nodes.len();
                        let out = self.layer(inner, index, path.clone(), flow.clone())?;
                        self.ties.push(Tie {
                            key,
                            nodes: start..self.nodes.len(),
                            input: flow,
                            path,
                        });
                        Ok(out)
                    }
                }
            }
            _ => self.leaf(layer, index, path, flow),
        }
    }

    /// Checks a layer's output against what the compiler computed for it.
    fn check_expected(
        &self,
        index: usize,
        kind: &str,
        expected: Option<&PartialShape>,
        input: &[usize],
        output: &[usize],
    ) -> Result<(), ShapeError> {
        match expected {
            Some(compiled) if !agrees(output, compiled) => Err(contradicts(
                index,
                kind,
                format!(
                    "its run-time rule (`Layer::output_shape`) gives output {} for input {}, but its compile-time half (`LayerOn::Out`) told the compiler {compiled}",
                    Dims(output),
                    Dims(input)
                ),
            )),
            _ => Ok(()),
        }
    }

    /// A later place of a tied set: the first place's nodes again, computing with its
    /// parameters, on an input of the same shape.
    fn tied(
        &mut self,
        kind: &'static str,
        path: String,
        flow: Flow,
        tie: usize,
    ) -> Result<Flow, ShapeError> {
        let Some(tie) = self.ties.get(tie) else {
            return Err(ShapeError::Contract {
                what: format!("layer {path} ({kind})"),
                detail: "its tied set has no first place".into(),
            });
        };
        let (nodes, (from, made_for), first) =
            (tie.nodes.clone(), tie.input.clone(), tie.path.clone());
        if self.binding {
            let (input, made_for) = (known(&flow.1), known(&made_for));
            if input != made_for {
                return Err(ShapeError::TiedInput {
                    first,
                    place: path,
                    expected: made_for.unwrap_or_default(),
                    found: input.unwrap_or_default(),
                });
            }
        }
        // The compiler computed the same shapes for this place as for the first.
        self.cursor += nodes.len();
        let Some(last) = nodes.end.checked_sub(1).filter(|l| *l >= nodes.start) else {
            // A tied set of no nodes (a reshape's parts): its input passes through.
            return Ok(flow);
        };
        let output = self.nodes.get(last).and_then(|n| n.output.clone());
        self.replay(nodes, from, flow.0, Some((&first, &path)));
        Ok((Src::Node(self.nodes.len() - 1), output))
    }

    /// A residual block: its body, its projection, and the node that adds them.
    fn residual(
        &mut self,
        index: usize,
        path: String,
        flow: Flow,
        block: Parts<'_>,
    ) -> Result<Flow, ShapeError> {
        let kind = "Residual";
        let Parts::Residual {
            body,
            names,
            projection,
            then,
        } = block
        else {
            return Err(contradicts(
                index,
                kind,
                "it is not a residual block".into(),
            ));
        };
        let expected = self.take_expected();
        let projection_name = projection.as_ref().map(|(name, _)| *name);
        self.check_names("residual block", &path, names, body.len(), projection_name)?;
        let inside = |branch: &'static str, path: &str| {
            let layer = path.to_owned();
            move |source: ShapeError| ShapeError::InBlock {
                layer,
                kind,
                branch,
                source: Box::new(source),
            }
        };
        let (body_src, body_shape) = self
            .seq(&body, &format!("{path}."), names, flow.clone())
            .map_err(inside("its body", &path))?;
        let (other_src, other_shape, what) = match projection {
            Some((name, layers)) => {
                let (src, shape) = self
                    .seq(&layers, &format!("{path}.{name}."), &[], flow.clone())
                    .map_err(inside("its projection", &path))?;
                (src, shape, "the projection's output")
            }
            None => (flow.0, flow.1.clone(), "its input"),
        };
        let output = if self.binding {
            let (Some(body), Some(other)) = (known(&body_shape), known(&other_shape)) else {
                return Err(contradicts(
                    index,
                    kind,
                    "its branches give no known shape".into(),
                ));
            };
            if body != other {
                return Err(ShapeError::Branch {
                    layer: path,
                    what,
                    body,
                    other,
                });
            }
            let input = known(&flow.1).unwrap_or_default();
            self.check_expected(index, kind, expected.as_ref(), &input, &body)?;
            Some(PartialShape::from_dims(&body))
        } else {
            match (body_shape, other_shape) {
                (Some(b), Some(o)) if b.0.len() != o.0.len() => None,
                (Some(b), Some(o)) => Some(PartialShape(
                    b.0.iter()
                        .zip(&o.0)
                        .map(|(b, o)| match (b, o) {
                            (Some(b), Some(o)) if b != o => None,
                            _ => b.or(*o),
                        })
                        .collect(),
                )),
                (b, o) => b.or(o),
            }
        };
        let after = (then != Activation::Identity)
            .then(|| format!("{path}.{}", then.name().to_lowercase()));
        let src = self.push(Node {
            path,
            kind,
            input: body_src,
            output: output.clone(),
            op: PlanOp::Add(other_src),
            params: Vec::new(),
            tied: None,
            buffers: Vec::new(),
        });
        // The activation after the sum (ResNet's ReLU), a node of its own that the sum's step
        // fuses.
        let Some(path) = after else {
            return Ok((src, output));
        };
        let src = self.push(Node {
            path,
            kind: then.name(),
            input: src,
            output: output.clone(),
            op: PlanOp::Layer(
                self.binding
                    .then(|| Arc::new(crate::layer::activation_kernel(then)) as Arc<dyn Kernel>),
            ),
            params: Vec::new(),
            tied: None,
            buffers: Vec::new(),
        });
        Ok((src, output))
    }

    /// A single layer, run by its kernel.
    fn leaf(
        &mut self,
        layer: &dyn Layer,
        index: usize,
        path: String,
        flow: Flow,
    ) -> Result<Flow, ShapeError> {
        let kind = layer.kind();
        let expected = self.take_expected();
        let output = layer.output_shape(flow.1.as_ref());
        if !self.binding {
            let output = output.ok().flatten();
            let params = layer
                .param_shapes(flow.1.as_ref())
                .into_iter()
                .map(|(role, shape)| Planned {
                    name: format!("{path}.{}", role.suffix()),
                    shape,
                    role,
                    fan_in: 0,
                    fan_out: 0,
                })
                .collect();
            let buffers = layer
                .buffers(flow.1.as_ref())
                .into_iter()
                .map(|b| (format!("{path}.{}", b.name), b.shape, b.kind))
                .collect();
            let src = self.push(Node {
                path,
                kind,
                input: flow.0,
                output: output.clone(),
                op: PlanOp::Layer(None),
                params,
                tied: None,
                buffers,
            });
            return Ok((src, output));
        }
        let too_large = |tensor: String, shape: Vec<usize>| ShapeError::TooLarge {
            layer: index,
            kind,
            tensor,
            shape,
        };
        let output = output.map_err(|f: Fault| f.at(index, kind))?;
        // The walk starts from a known input, and each layer before was checked to give a
        // known output.
        let Some(input) = flow.1.as_ref().and_then(PartialShape::known) else {
            return Err(contradicts(
                index,
                kind,
                "it receives no known shape".into(),
            ));
        };
        // From a known input every layer's output is known (a `Layer` promises it).
        let output = match output.as_ref().map(|o| (o.known(), o)) {
            Some((Some(output), _)) => output,
            Some((None, partial)) => {
                return Err(contradicts(
                    index,
                    kind,
                    format!(
                        "its `output_shape` gives {partial} for the known input {}; from a known input every size of the output must be known",
                        Dims(&input)
                    ),
                ))
            }
            None => {
                return Err(contradicts(
                    index,
                    kind,
                    format!(
                        "its `output_shape` gives no shape for the known input {}; it must give the output's shape or an error saying why the input does not fit",
                        Dims(&input)
                    ),
                ))
            }
        };
        self.check_expected(index, kind, expected.as_ref(), &input, &output)?;
        let mut params: Vec<(Role, String, Vec<usize>)> = Vec::new();
        for (role, shape) in layer.param_shapes(flow.1.as_ref()) {
            let name = format!("{path}.{}", role.suffix());
            if params.iter().any(|(_, n, _)| *n == name) {
                return Err(ShapeError::DuplicateParam {
                    layer: index,
                    kind,
                    name,
                });
            }
            let Some(shape) = shape.known() else {
                return Err(contradicts(
                    index,
                    kind,
                    format!(
                        "its parameter `{name}` has shape {shape} for the known input {}; once the input is known every size of a parameter must be",
                        Dims(&input)
                    ),
                ));
            };
            if !fits(&shape) {
                return Err(too_large(format!("parameter `{name}`"), shape));
            }
            params.push((role, name, shape));
        }
        let tensors = [("input", &input), ("output", &output)];
        for (tensor, shape) in tensors {
            if !fits(shape) {
                return Err(too_large(tensor.into(), shape.clone()));
            }
        }
        let mut buffers = Vec::new();
        for spec in layer.buffers(flow.1.as_ref()) {
            if spec.name.is_empty() || spec.name.contains('.') {
                return Err(contradicts(
                    index,
                    kind,
                    format!(
                        "its buffer name `{}` is not one part of a path (not empty, no dot)",
                        spec.name
                    ),
                ));
            }
            let name = format!("{path}.{}", spec.name);
            let clash = params.iter().any(|(_, n, _)| *n == name)
                || buffers.iter().any(|(n, _, _)| *n == name);
            if clash {
                return Err(contradicts(
                    index,
                    kind,
                    format!(
                        "its buffer `{name}` has the name of another of its buffers or parameters"
                    ),
                ));
            }
            if let crate::layer::BufferKind::Values {
                fill,
                nonnegative: true,
            } = spec.kind
            {
                if fill.is_nan() || fill < 0.0 {
                    return Err(contradicts(
                        index,
                        kind,
                        format!(
                            "its buffer `{name}` holds values of at least 0 but starts at {fill}"
                        ),
                    ));
                }
            }
            let shape = match (spec.kind, spec.shape.known()) {
                (crate::layer::BufferKind::Count, Some(shape)) if shape.is_empty() => shape,
                (crate::layer::BufferKind::Values { .. }, Some(shape)) if !shape.is_empty() => {
                    shape
                }
                (_, Some(shape)) => {
                    return Err(contradicts(
                        index,
                        kind,
                        format!(
                            "its buffer `{name}` has shape {}; a count has shape [] and values have at least one dimension",
                            Dims(&shape)
                        ),
                    ))
                }
                (_, None) => {
                    return Err(contradicts(
                        index,
                        kind,
                        format!(
                            "its buffer `{name}` has shape {} for the known input {}; once the input is known every size of a buffer must be",
                            spec.shape,
                            Dims(&input)
                        ),
                    ))
                }
            };
            if !fits(&shape) {
                return Err(too_large(format!("buffer `{name}`"), shape));
            }
            buffers.push((name, PartialShape::from_dims(&shape), spec.kind));
        }
        for (tensor, shape) in layer.scratch(&input, &output) {
            if !fits(&shape) {
                return Err(too_large(tensor.into(), shape));
            }
        }
        // PyTorch's fans, read from the weight (the first parameter): a dense `[out, in]` has
        // fan-in `in`; a convolution `[out, in, k, k]` has `in·k·k`. A bias shares them. The
        // weight fits, so these products do not overflow.
        let from_weight = || {
            params.first().map_or((0, 0), |(_, _, w)| {
                let field = w.iter().skip(2).product::<usize>();
                let size = |i: usize| w.get(i).copied().unwrap_or(0) * field;
                (size(1), size(0))
            })
        };
        let (fan_in, fan_out) = layer.fans(&input, &output).unwrap_or_else(from_weight);
        let kernel: Arc<dyn Kernel> = Arc::from(layer.kernel(&input, &output));
        // Both products fit: `fits` checked them.
        let size = |dims: &[usize]| dims.iter().product::<usize>();
        if (kernel.is_reshape() || kernel.activation().is_some())
            && !(params.is_empty() && buffers.is_empty())
        {
            return Err(contradicts(
                index,
                kind,
                format!(
                    "its kernel says it is {} (`Kernel::{}`), which the net skips or runs without its kernel, but it owns {} parameter(s) and {} buffer(s)",
                    if kernel.is_reshape() { "a reshape" } else { "an element-wise function" },
                    if kernel.is_reshape() { "is_reshape" } else { "activation" },
                    params.len(),
                    buffers.len()
                ),
            ));
        }
        if kernel.is_reshape() && size(&input) != size(&output) {
            return Err(contradicts(
                index,
                kind,
                format!(
                    "its kernel says it is a reshape (`Kernel::is_reshape`), which the net skips, but its output {} holds {} values and its input {} holds {}",
                    Dims(&output),
                    size(&output),
                    Dims(&input),
                    size(&input)
                ),
            ));
        }
        if let Some(activation) = kernel.activation().filter(|_| input != output) {
            return Err(contradicts(
                index,
                kind,
                format!(
                    "its kernel says it is the element-wise {activation:?} (`Kernel::activation`), which keeps the shape, but it maps input {} to output {}",
                    Dims(&input),
                    Dims(&output)
                ),
            ));
        }
        let params = params
            .into_iter()
            .map(|(role, name, shape)| Planned {
                name,
                shape: PartialShape::from_dims(&shape),
                role,
                fan_in,
                fan_out,
            })
            .collect();
        let output = PartialShape::from_dims(&output);
        let src = self.push(Node {
            path,
            kind,
            input: flow.0,
            output: Some(output.clone()),
            op: PlanOp::Layer(Some(kernel)),
            params,
            tied: None,
            buffers,
        });
        Ok((src, Some(output)))
    }
}
