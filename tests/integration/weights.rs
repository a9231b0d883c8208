//! Safetensors files: round trips, PyTorch's names and layout, the numpy fixtures, data type
//! conversion, and an error (never a panic, never a half-loaded net) for every bad file.

use std::path::{Path, PathBuf};

use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;
use proptest::prelude::*;
use safetensors::tensor::{Dtype, TensorView};

/// The issue's net, declared without an input size. (A macro: its type is long.)
macro_rules! mlp {
    () => {
        Net::new()
            .push(Dense::<U256>::new())
            .push(Relu)
            .push(Dense::<U10>::new())
            .seed(3)
    };
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Every parameter's name and values, to compare a net before and after a failed load.
fn snapshot<S: lazynet::Bound, L: lazynet::list::Layers>(
    net: &Net<S, L>,
) -> Vec<(String, DMatrix<f32>)> {
    net.named_params()
        .map(|(name, value)| (name.to_owned(), value.clone()))
        .collect()
}

/// A file of the given tensors, written by the `safetensors` crate.
fn file(tensors: &[Entry<'_>]) -> Vec<u8> {
    let views: Vec<_> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            let view = TensorView::new(*dtype, shape.to_vec(), data).expect("a valid test tensor");
            (name.to_string(), view)
        })
        .collect();
    safetensors::serialize(views, None).expect("the test tensors serialize")
}

fn f32_bytes(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

fn zeros(n: usize) -> Vec<u8> {
    f32_bytes(std::iter::repeat_n(0.0, n))
}

/// A file with a hand-written header, for layouts the `safetensors` writer refuses to make.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// A tensor for [`file`]: name, data type, shape, bytes.
type Entry<'a> = (&'a str, Dtype, &'a [usize], Vec<u8>);

/// The four tensors of the 20 → 256 → 10 MLP, all zeros.
fn mlp_tensors() -> Vec<Entry<'static>> {
    vec![
        ("0.weight", Dtype::F32, &[256, 20], zeros(5120)),
        ("0.bias", Dtype::F32, &[256], zeros(256)),
        ("2.weight", Dtype::F32, &[10, 256], zeros(2560)),
        ("2.bias", Dtype::F32, &[10], zeros(10)),
    ]
}

/// The MLP's tensors with `0.weight` replaced by `first`.
fn mlp_file_with(first: Entry<'_>) -> Vec<u8> {
    let mut tensors = mlp_tensors();
    tensors[0] = first;
    file(&tensors)
}

/// Loads `bytes` into a bound net and returns the error text, checking that the net is
/// unchanged.
fn load_error(bytes: &[u8]) -> String {
    let mut net = mlp!().bind::<U20>();
    let before = snapshot(&net);
    let err = net
        .load_from_bytes(bytes)
        .expect_err("the file is bad and must be refused");
    assert_eq!(snapshot(&net), before, "a failed load changed the net");
    err.to_string()
}

#[test]
fn save_then_load_restores_every_parameter_and_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.safetensors");
    let net = mlp!().seed(11).bind::<U20>();
    net.save(&path).unwrap();

    let mut other = mlp!().seed(12).bind::<U20>();
    assert_ne!(snapshot(&other), snapshot(&net));
    other.load(&path).unwrap();
    assert_eq!(snapshot(&other), snapshot(&net));

    let x = Batch::<U20>::from_fn(5, |f, s| (f as f32 - 3.0 * s as f32) / 7.0);
    assert_eq!(other.forward(&x).as_matrix(), net.forward(&x).as_matrix());

    // `save_to_bytes` is what `save` writes.
    assert_eq!(std::fs::read(&path).unwrap(), net.save_to_bytes().unwrap());
}

#[test]
fn files_hold_pytorch_names_shapes_row_major_values_and_metadata() {
    let net = mlp!().bind::<U20>();
    let bytes = net.save_to_bytes().unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort_unstable();
    assert_eq!(names, ["0.bias", "0.weight", "2.bias", "2.weight"]);
    for (name, value) in net.named_params() {
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), Dtype::F32);
        let shape = if name.ends_with("bias") {
            vec![value.nrows()]
        } else {
            vec![value.nrows(), value.ncols()]
        };
        assert_eq!(t.shape(), shape, "{name}");
        // Row-major: element (r, c) of an `[out, in]` weight is at `r·in + c`.
        let stored: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        for r in 0..value.nrows() {
            for c in 0..value.ncols() {
                assert_eq!(
                    stored[r * value.ncols() + c],
                    value[(r, c)],
                    "{name}[{r}, {c}]"
                );
            }
        }
    }
    let weights = Weights::from_vec(bytes).unwrap();
    assert_eq!(weights.metadata("format"), Some("pt"));
    assert_eq!(weights.metadata("library"), Some("lazynet"));
    assert_eq!(weights.metadata("version"), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(weights.get("0.weight").unwrap().shape(), [256, 20]);
    assert_eq!(weights.len(), 4);
}

#[test]
fn conv_weights_are_saved_as_out_in_kh_kw() {
    let net = Net::new()
        .push(Conv2d::<U4, U3>::new())
        .push(Relu)
        .push(Flatten)
        .push(Dense::<U2>::new())
        .bind::<Image<U2, U5, U5>>();
    let weights = Weights::from_vec(net.save_to_bytes().unwrap()).unwrap();
    assert_eq!(weights.get("0.weight").unwrap().shape(), [4, 2, 3, 3]);
    assert_eq!(weights.get("0.bias").unwrap().shape(), [4]);
    assert_eq!(weights.get("3.weight").unwrap().shape(), [2, 36]);
}

#[test]
fn load_infer_reads_the_input_size_from_the_first_weight() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.safetensors");
    let decl = mlp!();
    let net = decl.clone().bind::<U20>();
    net.save(&path).unwrap();

    let loaded = decl.load_infer(&path).unwrap();
    assert_eq!(loaded.input(), Dyn(20));
    assert_eq!(snapshot(&loaded), snapshot(&net));

    let bound = decl.load_bound::<U20>(&path).unwrap();
    assert_eq!(snapshot(&bound), snapshot(&net));

    // The same declaration takes a file of another input size.
    decl.clone().bind::<U33>().save(&path).unwrap();
    assert_eq!(decl.load_infer(&path).unwrap().input(), Dyn(33));
    assert_eq!(
        decl.load_bound::<U20>(&path).unwrap_err().to_string(),
        "tensor `0.weight`: expected shape (256, 20), found (256, 33)"
    );
}

#[test]
fn load_infer_checks_a_declared_input_against_the_file() {
    let decl = Net::new()
        .push(Dense::<U256>::with_input::<U20>())
        .push(Relu)
        .push(Dense::<U10>::new());
    let bytes = mlp_file_with(("0.weight", Dtype::F32, &[256, 30], zeros(256 * 30)));
    let err = decl
        .load_infer_weights(&Weights::from_vec(bytes).unwrap(), LoadOptions::new())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor `0.weight`: expected shape (256, 20), found (256, 30)"
    );
}

#[test]
fn load_infer_errors_name_the_tensor_the_size_comes_from() {
    let infer = |bytes: Vec<u8>| {
        let weights = Weights::from_vec(bytes).unwrap();
        mlp!()
            .load_infer_weights(&weights, LoadOptions::new())
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        infer(mlp_file_with(("0.weight", Dtype::F32, &[256, 0], vec![]))),
        "tensor `0.weight` has shape (256, 0), which gives an input size of 0, but the net cannot take it: the input size must be at least 1, got 0"
    );
    assert_eq!(
        infer(mlp_file_with((
            "0.weight",
            Dtype::F32,
            &[5120],
            zeros(5120)
        ))),
        "tensor `0.weight`: expected 2 dimensions, shape (256, ?), found 1: (5120,)"
    );
    assert_eq!(
        infer(mlp_file_with((
            "0.weight",
            Dtype::F32,
            &[128, 20],
            zeros(2560)
        ))),
        "tensor `0.weight`: expected shape (256, ?), found (128, 20)"
    );
    assert_eq!(
        infer(mlp_file_with((
            "zero.weight",
            Dtype::F32,
            &[256, 20],
            zeros(5120)
        ))),
        "the file has no tensor `0.weight`; the net expects one of shape (256, ?)"
    );

    let no_params = Net::new().push(Relu);
    let weights = Weights::from_vec(file(&[])).unwrap();
    assert_eq!(
        no_params
            .load_infer_weights(&weights, LoadOptions::new())
            .unwrap_err()
            .to_string(),
        "the net has no parameters, so no tensor in the file gives its input size; bind it with `try_bind` first"
    );
}

/// `(features × samples)` matrices of a fixture's `input` and numpy's `output`; a row-major
/// `[samples, …]` tensor is the column-major `features × samples` matrix lazynet uses.
fn fixture_io(name: &str) -> (DMatrix<f32>, DMatrix<f32>) {
    let io = Weights::read(fixture(name)).unwrap();
    let matrix = |key: &str| {
        let t = io.get(key).unwrap();
        let samples = t.shape()[0];
        let values = t.to_f32().unwrap();
        DMatrix::from_vec(values.len() / samples, samples, values)
    };
    (matrix("input"), matrix("output"))
}

fn max_abs_diff(a: &DMatrix<f32>, b: &DMatrix<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn numpy_mlp_fixture_loads_into_a_declaration_without_sizes_and_matches_numpy() {
    let net = mlp!()
        .load_infer(fixture("mlp_20_256_10.safetensors"))
        .unwrap();
    assert_eq!(net.input(), Dyn(20));
    let (x, expected) = fixture_io("mlp_20_256_10_io.safetensors");
    assert_eq!((x.nrows(), x.ncols()), (20, 8));
    let y = net.try_forward_matrix(&x).unwrap();
    let diff = max_abs_diff(y.as_matrix(), &expected);
    assert!(diff <= 1e-5, "differs from numpy by {diff}");
    // Not a vacuous comparison: the outputs are not all zero.
    assert!(expected.amax() > 0.1);
}

#[test]
fn numpy_conv_fixture_matches_pytorch_layout() {
    let decl = Net::new()
        .push(Conv2d::<U3, U3>::new().stride::<U2>().padding::<U1>())
        .push(Relu)
        .push(MaxPool2d::<U2>::new())
        .push(Flatten)
        .push(Dense::<U5>::new());
    let path = fixture("conv_2x7x7.safetensors");
    let (x, expected) = fixture_io("conv_2x7x7_io.safetensors");

    let net = decl.load_bound::<Image<U2, U7, U7>>(&path).unwrap();
    let y = net.try_forward_matrix(&x).unwrap();
    let diff = max_abs_diff(y.as_matrix(), &expected);
    assert!(diff <= 1e-5, "differs from numpy by {diff}");
    assert!(expected.amax() > 0.1);

    // The run-time image path: bind, then load.
    let mut net = decl.try_bind(Image::dynamic(2, 7, 7)).unwrap();
    net.load(&path).unwrap();
    let diff = max_abs_diff(net.try_forward_matrix(&x).unwrap().as_matrix(), &expected);
    assert!(diff <= 1e-5, "differs from numpy by {diff}");
}

#[test]
fn half_bfloat_and_double_tensors_are_converted() {
    let values: Vec<f32> = (0..5120).map(|i| (i % 97) as f32 / 8.0 - 6.0).collect();
    let as_f16 = values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let as_bf16 = values
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect();
    let as_f64 = values
        .iter()
        .flat_map(|&v| f64::from(v).to_le_bytes())
        .collect();
    // Multiples of 1/8 below 8 in magnitude are exact in all three types.
    for (dtype, data) in [
        (Dtype::F16, as_f16),
        (Dtype::BF16, as_bf16),
        (Dtype::F64, as_f64),
    ] {
        let bytes = mlp_file_with(("0.weight", dtype, &[256, 20], data));
        let mut net = mlp!().bind::<U20>();
        net.load_from_bytes(&bytes).unwrap();
        let (_, w) = net.named_params().next().unwrap();
        for r in 0..256 {
            for c in 0..20 {
                assert_eq!(w[(r, c)], values[r * 20 + c], "{dtype:?} [{r}, {c}]");
            }
        }
    }
    // f64 values are rounded to the nearest f32.
    let third = f64::from(1.0f32 / 3.0) + 1e-12;
    let bytes = mlp_file_with((
        "0.weight",
        Dtype::F64,
        &[256, 20],
        std::iter::repeat_n(third, 5120)
            .flat_map(f64::to_le_bytes)
            .collect(),
    ));
    let mut net = mlp!().bind::<U20>();
    net.load_from_bytes(&bytes).unwrap();
    assert!(net
        .named_params()
        .next()
        .unwrap()
        .1
        .iter()
        .all(|&v| v == 1.0 / 3.0));
}

#[test]
fn an_unsupported_dtype_is_an_error_naming_the_tensor() {
    let bytes = mlp_file_with(("0.weight", Dtype::I32, &[256, 20], vec![0; 5120 * 4]));
    assert_eq!(
        load_error(&bytes),
        "tensor `0.weight` has data type I32; lazynet loads F32, F16, BF16 and F64"
    );
}

#[test]
fn missing_tensor() {
    let mut tensors = mlp_tensors();
    tensors.pop();
    let bytes = file(&tensors);
    assert_eq!(
        load_error(&bytes),
        "the file has no tensor `2.bias`; the net expects one of shape (10,)"
    );
}

#[test]
fn unexpected_tensors_are_an_error_unless_allowed() {
    let mut tensors = mlp_tensors();
    tensors.push(("4.weight", Dtype::F32, &[3, 10], zeros(30)));
    tensors.push(("steps", Dtype::I64, &[], vec![0; 8]));
    let bytes = file(&tensors);
    assert_eq!(
        load_error(&bytes),
        "the file has 2 tensors the net has no parameter for: `4.weight` (3, 10), `steps` (); `LoadOptions::new().allow_unexpected(true)` ignores them"
    );

    // Allowed: loaded, the extra tensors (one of a type lazynet does not read) ignored.
    let weights = Weights::from_bytes(&bytes).unwrap();
    let mut net = mlp!().bind::<U20>();
    net.load_weights(&weights, LoadOptions::new().allow_unexpected(true))
        .unwrap();
    assert!(net.named_params().all(|(_, v)| v.iter().all(|&x| x == 0.0)));
    let inferred = mlp!()
        .load_infer_weights(&weights, LoadOptions::new().allow_unexpected(true))
        .unwrap();
    assert_eq!(inferred.input(), Dyn(20));
}

#[test]
fn wrong_shape() {
    let mut tensors = mlp_tensors();
    tensors[2] = ("2.weight", Dtype::F32, &[10, 255], zeros(2550));
    let bytes = file(&tensors);
    assert_eq!(
        load_error(&bytes),
        "tensor `2.weight`: expected shape (10, 256), found (10, 255)"
    );
    // The same number of values in another shape (a transposed weight) is still an error.
    let bytes = mlp_file_with(("0.weight", Dtype::F32, &[20, 256], zeros(5120)));
    assert_eq!(
        load_error(&bytes),
        "tensor `0.weight`: expected shape (256, 20), found (20, 256)"
    );
}

#[test]
fn wrong_rank() {
    let bytes = mlp_file_with(("0.weight", Dtype::F32, &[256, 20, 1], zeros(5120)));
    assert_eq!(
        load_error(&bytes),
        "tensor `0.weight`: expected 2 dimensions, shape (256, 20), found 3: (256, 20, 1)"
    );
}

#[test]
fn empty_and_too_short_files() {
    assert_eq!(
        load_error(&[]),
        "the file is empty; a safetensors file starts with an 8-byte header length"
    );
    assert_eq!(
        load_error(&[1, 0, 0]),
        "the file has 3 bytes, fewer than the 8-byte header length a safetensors file starts with"
    );
}

#[test]
fn header_length_larger_than_the_file() {
    let mut bytes = raw("{}", &[]);
    bytes[..8].copy_from_slice(&1000u64.to_le_bytes());
    assert_eq!(
        load_error(&bytes),
        "the header length says 1000 bytes but only 2 bytes follow it; the file is truncated or not a safetensors file"
    );
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(load_error(&bytes).starts_with("the header length says 18446744073709551615 bytes"));
}

#[test]
fn truncated_files() {
    let good = mlp!().bind::<U20>().save_to_bytes().unwrap();
    // Cut inside the header.
    assert!(load_error(&good[..40]).starts_with("the header length says"));
    // Cut inside the last tensor's data: the error names it.
    let cut = &good[..good.len() - 3];
    let msg = load_error(cut);
    assert!(
        msg.starts_with("tensor `") && msg.contains("the file is truncated"),
        "{msg}"
    );
    assert!(msg.contains(&format!(
        "holds only {} bytes of data",
        good.len() - 3 - header_end(&good)
    )));
}

fn header_end(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

#[test]
fn invalid_json_header() {
    assert_eq!(
        load_error(&raw("{\"0.weight\": {\"dtype\": \"F32\",", &[])),
        "invalid header: the header is not a JSON description of tensors: EOF while parsing a value at line 1 column 29"
    );
    let msg = load_error(&raw(
        r#"{"0.weight": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}}"#,
        &[0],
    ));
    assert!(msg.contains("unknown variant `Q4`"), "{msg}");
    let msg = load_error(&[2, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe]);
    assert!(
        msg.starts_with("invalid header: the header is not UTF-8"),
        "{msg}"
    );
}

#[test]
fn overlapping_offsets() {
    // (header, bytes of data after it, the error)
    let cases = [
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            12,
            "tensor `b`: its data offsets [4, 12] overlap the previous tensor's, which end at byte 8",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            8,
            "tensor `b`: its data offsets [0, 8] overlap the previous tensor's, which end at byte 8",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            12,
            "tensor `a`: its data offsets [4, 12] leave a gap after the previous tensor's, which end at byte 0",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}"#,
            8,
            "tensor `b`: its data offsets [8, 4] end before they start",
        ),
    ];
    for (header, data, expected) in cases {
        assert_eq!(
            load_error(&raw(header, &vec![0; data])),
            expected,
            "{header}"
        );
    }
}

#[test]
fn out_of_range_offsets() {
    // (header, bytes of data after it, the error)
    let cases = [
        // Offsets that agree with the shape but run past the end of the file.
        (
            r#"{"a":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}"#,
            16,
            "tensor `a`: its data ends at byte 4000 of the data section but the file holds only 16 bytes of data; the file is truncated",
        ),
        // Offsets that disagree with the shape.
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4000]}}"#,
            16,
            "tensor `a`: shape (2,) of F32 needs 8 bytes but its data offsets span 4000",
        ),
        // A shape whose byte count overflows.
        (
            r#"{"a":{"dtype":"F32","shape":[4611686018427387904, 8],"data_offsets":[0,8]}}"#,
            8,
            "tensor `a`: shape (4611686018427387904, 8) of F32 needs more than usize::MAX bytes but its data offsets span 8",
        ),
        // Bytes after the last tensor.
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            12,
            "the header describes 8 bytes of tensor data but 12 bytes follow it",
        ),
    ];
    for (header, data, expected) in cases {
        assert_eq!(
            load_error(&raw(header, &vec![0; data])),
            expected,
            "{header}"
        );
    }
}

#[test]
fn directories_and_unreadable_paths() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = mlp!().bind::<U20>();
    let before = snapshot(&net);
    let shown = dir.path().display().to_string();

    let err = net.load(dir.path()).unwrap_err();
    assert!(
        matches!(err, LoadError::NotAFile { kind, .. } if kind == "a directory"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("cannot read `{shown}`: it is a directory, not a regular file")
    );

    let missing = dir.path().join("missing.safetensors");
    let err = net.load(&missing).unwrap_err();
    assert!(err.to_string().contains("No such file"), "{err}");

    let regular = dir.path().join("file");
    std::fs::write(&regular, b"x").unwrap();
    let err = net.load(regular.join("below")).unwrap_err();
    assert!(err.to_string().contains("Not a directory"), "{err}");

    assert!(mlp!().load_infer(dir.path()).is_err());
    assert!(mlp!().load_bound::<U20>(&missing).is_err());
    assert_eq!(snapshot(&net), before);

    // Saving to a directory fails and leaves it alone.
    let err = net.save(dir.path()).unwrap_err();
    assert!(matches!(err, SaveError::Io { .. }), "{err}");
    assert!(err
        .to_string()
        .starts_with(&format!("cannot write `{shown}`: ")));
}

#[test]
fn saving_is_deterministic_and_replaces_a_previous_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.safetensors");
    mlp!().seed(1).bind::<U20>().save(&path).unwrap();

    let net = mlp!().bind::<U20>();
    net.save(&path).unwrap();
    let first = std::fs::read(&path).unwrap();
    assert_eq!(first, net.save_to_bytes().unwrap());
    // The metadata comes from a `HashMap`, whose order differs between instances; the header
    // is written sorted, so every save writes the same bytes.
    for _ in 0..20 {
        net.save(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), first);
    }
    let header = &first[8..header_end(&first)];
    let text = std::str::from_utf8(header).unwrap();
    assert!(
        text.starts_with(r#"{"0.bias":{"#)
            && text.contains(r#""__metadata__":{"format":"pt","library":"lazynet","version":""#),
        "{text}"
    );
    // No temporary file is left beside it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn image_nets_round_trip_on_both_binding_paths() {
    let decl = Net::new()
        .push(Conv2d::<U4, U3>::new().padding::<U1>())
        .push(Relu)
        .push(MaxPool2d::<U2>::new())
        .push(Flatten)
        .push(Dense::<U3>::new())
        .seed(5);
    let net = decl.clone().bind::<Image<U2, U6, U6>>();
    let bytes = net.save_to_bytes().unwrap();
    let weights = Weights::from_bytes(bytes.as_slice()).unwrap();
    let loaded = decl
        .load_bound_weights::<Image<U2, U6, U6>>(&weights, LoadOptions::new())
        .unwrap();
    assert_eq!(snapshot(&loaded), snapshot(&net));

    // A file for another image size: the dense layer after the flatten does not fit.
    let mut other = decl.try_bind(Image::dynamic(2, 8, 8)).unwrap();
    let before = snapshot(&other);
    assert_eq!(
        other.load_from_bytes(&bytes).unwrap_err().to_string(),
        "tensor `4.weight`: expected shape (3, 64), found (3, 36)"
    );
    assert_eq!(snapshot(&other), before);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any mutation of a valid file (bytes overwritten, the file cut or extended) loads or is
    /// refused; it never panics, and a refused load leaves the net as it was.
    #[test]
    fn mutated_files_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in prop::option::of(any::<prop::sample::Index>()),
        extra in prop::collection::vec(any::<u8>(), 0..3),
        in_header in any::<bool>(),
    ) {
        let small = Net::new().push(Dense::<U3>::new()).push(Relu).push(Dense::<U2>::new());
        let mut bytes = small.clone().bind::<U4>().save_to_bytes().unwrap();
        // Half the time aim the edits at the length and header, where the parsing is.
        let span = if in_header { header_end(&bytes) } else { bytes.len() };
        for (at, value) in edits {
            let at = at.index(span);
            bytes[at] = value;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        bytes.extend(extra);

        let mut net = small.clone().seed(9).bind::<U4>();
        let before = snapshot(&net);
        match net.load_from_bytes(&bytes) {
            Ok(()) => prop_assert_eq!(net.param_shapes(), [vec![3, 4], vec![3], vec![2, 3], vec![2]]),
            Err(err) => {
                prop_assert!(!err.to_string().is_empty());
                prop_assert_eq!(snapshot(&net), before);
            }
        }
        if let Ok(weights) = Weights::from_bytes(bytes.as_slice()) {
            for name in weights.names() {
                let _ = weights.get(name).map(|t| t.to_f32());
            }
            let _ = small.load_infer_weights(&weights, LoadOptions::new().allow_unexpected(true));
        }
    }
}

/// A file in a fresh temporary directory holding `bytes`.
fn written(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

/// `Weights::read` of a file holding `bytes` gives what `Weights::from_bytes` gives.
fn read_matches_from_bytes(bytes: &[u8]) {
    let (_dir, path) = written(bytes);
    let from_file = Weights::read(&path).map(|w| format!("{w:?}"));
    let from_bytes = Weights::from_bytes(bytes).map(|w| format!("{w:?}"));
    assert_eq!(
        from_file.map_err(|e| e.to_string()),
        from_bytes.map_err(|e| e.to_string())
    );
}

#[test]
fn reading_a_file_gives_the_errors_of_its_bytes() {
    let good = mlp!().bind::<U20>().save_to_bytes().unwrap();
    let mut long = good.clone();
    long.extend_from_slice(&[1; 13]);
    let mut huge_header = raw("{}", &[]);
    huge_header[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let cases: Vec<Vec<u8>> = vec![
        good.clone(),
        vec![],
        vec![1, 0, 0],
        good[..40].to_vec(),
        good[..good.len() - 3].to_vec(),
        long,
        huge_header,
        raw("{\"0.weight\": {\"dtype\": \"F32\",", &[]),
        raw(
            r#"{"a":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}"#,
            &[0; 16],
        ),
        raw(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4000]}}"#,
            &[0; 16],
        ),
        raw(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            &[0; 12],
        ),
        raw(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            &[0; 12],
        ),
        raw("{}", &[0; 5]),
        raw("{}", &[]),
    ];
    for bytes in cases {
        read_matches_from_bytes(&bytes);
    }
}

#[test]
fn trailing_data_is_counted_not_read() {
    let net = mlp!().bind::<U20>();
    let good = net.save_to_bytes().unwrap();
    let data = good.len() - header_end(&good);
    let mut bytes = good.clone();
    bytes.extend(std::iter::repeat_n(0xa5, 1 << 20));
    let (_dir, path) = written(&bytes);
    let err = Weights::read(&path).unwrap_err();
    assert!(
        matches!(err, LoadError::TrailingData { described, available }
            if described == data && available == data + (1 << 20)),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "the header describes {data} bytes of tensor data but {} bytes follow it",
            data + (1 << 20)
        )
    );
    let mut other = mlp!().seed(8).bind::<U20>();
    let before = snapshot(&other);
    assert!(other.load(&path).is_err());
    assert_eq!(snapshot(&other), before);

    // A terabyte of (sparse) trailing data: refused at once, none of it read or allocated.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let len = 1u64 << 40;
    file.set_len(len).unwrap();
    drop(file);
    let err = Weights::read(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the header describes {data} bytes of tensor data but {} bytes follow it",
            len as usize - header_end(&good)
        )
    );
}

#[test]
fn a_header_length_beyond_the_file_is_refused_without_allocating_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    // A sparse file of 2^40 bytes whose header length says 2^39: within the file, but more
    // than safetensors allows, so refused before allocating it.
    std::fs::write(&path, (1u64 << 39).to_le_bytes()).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(1 << 40).unwrap();
    drop(file);
    assert_eq!(
        Weights::read(&path).unwrap_err().to_string(),
        "invalid header: the header is larger than the 100000000 bytes safetensors allows"
    );
    // A header length past the end of the file.
    let (_dir, path) = written(&raw("{}", &[]));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..8].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(
        Weights::read(&path).unwrap_err().to_string(),
        "the header length says 18446744073709551612 bytes but only 2 bytes follow it; the file is truncated or not a safetensors file"
    );
    // A valid header whose tensor is a terabyte, in a file that has it (sparsely): the header
    // is checked first, so a header fault is found without reading the data.
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,1099511627776]}}"#;
    let (_dir, path) = written(&raw(header, &[]));
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(8 + header.len() as u64 + (1 << 40)).unwrap();
    drop(file);
    assert_eq!(
        Weights::read(&path).unwrap_err().to_string(),
        "tensor `a`: shape (2,) of F32 needs 8 bytes but its data offsets span 1099511627776"
    );
}

#[cfg(unix)]
#[test]
fn devices_are_refused_before_they_are_read() {
    let mut net = mlp!().bind::<U20>();
    let before = snapshot(&net);
    let err = net.load("/dev/zero").unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot read `/dev/zero`: it is a character device, not a regular file"
    );
    assert!(matches!(err, LoadError::NotAFile { .. }), "{err:?}");
    assert!(mlp!().load_infer("/dev/zero").is_err());
    assert!(mlp!().load_bound::<U20>("/dev/null").is_err());
    assert_eq!(snapshot(&net), before);
}

#[cfg(unix)]
#[test]
fn a_fifo_is_refused_without_waiting_for_a_writer() {
    use std::sync::mpsc;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("`mkfifo` runs");
    assert!(status.success(), "mkfifo failed: {status}");

    let (tx, rx) = mpsc::channel();
    let path = fifo.clone();
    let reader = std::thread::spawn(move || {
        let result = Weights::read(&path).map(|_| ()).map_err(|e| e.to_string());
        let _ = tx.send(result);
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(result) => {
            reader.join().unwrap();
            assert_eq!(
                result,
                Err(format!(
                    "cannot read `{}`: it is a FIFO (named pipe), not a regular file",
                    fifo.display()
                ))
            );
        }
        Err(_) => {
            // The reader is stuck opening the FIFO: open it for writing to free it, then fail.
            drop(std::fs::OpenOptions::new().write(true).open(&fifo));
            panic!("reading a FIFO blocked for 10 s");
        }
    }
}

#[cfg(unix)]
#[test]
fn a_symlink_to_a_file_loads() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("mlp.safetensors");
    let net = mlp!().seed(21).bind::<U20>();
    net.save(&target).unwrap();
    let link = dir.path().join("link.safetensors");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let mut other = mlp!().seed(22).bind::<U20>();
    other.load(&link).unwrap();
    assert_eq!(snapshot(&other), snapshot(&net));
}

#[cfg(unix)]
#[test]
fn saved_files_get_the_permissions_file_create_gives() {
    use std::os::unix::fs::PermissionsExt;

    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    let dir = tempfile::tempdir().unwrap();
    let sibling = dir.path().join("sibling");
    std::fs::File::create(&sibling).unwrap();
    let path = dir.path().join("mlp.safetensors");
    let net = mlp!().bind::<U20>();
    net.save(&path).unwrap();
    assert_eq!(
        format!("{:o}", mode(&path)),
        format!("{:o}", mode(&sibling))
    );
    // More than the owner can read it, under any usual umask (tempfile's default is 0600).
    assert_ne!(mode(&path), 0o600);

    // A file that is replaced keeps its permissions.
    for kept in [0o640, 0o604, 0o666] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(kept)).unwrap();
        net.save(&path).unwrap();
        assert_eq!(format!("{:o}", mode(&path)), format!("{kept:o}"));
        assert_eq!(std::fs::read(&path).unwrap(), net.save_to_bytes().unwrap());
    }
}

#[test]
fn saved_bytes_are_the_safetensors_encoding_with_sorted_keys() {
    use std::collections::{BTreeMap, HashMap};

    let net = Net::new()
        .push(Conv2d::<U3, U3>::new())
        .push(Relu)
        .push(Flatten)
        .push(Dense::<U4>::new())
        .push(Relu)
        .push(Dense::<U2>::new())
        .seed(4)
        .bind::<Image<U2, U5, U5>>();
    let mut shapes = net.param_shapes().into_iter();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = net
        .named_params()
        .map(|(name, value)| {
            let shape = shapes.next().unwrap();
            let bytes = f32_bytes(value.transpose().iter().copied());
            (name.to_owned(), shape, bytes)
        })
        .collect();
    let views: Vec<_> = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            (
                name.as_str(),
                TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    let metadata: HashMap<String, String> = [
        ("format", "pt"),
        ("library", "lazynet"),
        ("version", env!("CARGO_PKG_VERSION")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut expected = safetensors::serialize(views, Some(metadata)).unwrap();
    // The header rewritten with its keys sorted, padded to the same length.
    let end = header_end(&expected);
    let mut entries: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&expected[8..end]).unwrap();
    let meta: BTreeMap<String, String> =
        serde_json::from_value(entries.remove("__metadata__").unwrap()).unwrap();
    entries.insert("__metadata__".into(), serde_json::to_value(meta).unwrap());
    let mut sorted = serde_json::to_vec(&entries).unwrap();
    sorted.resize(end - 8, b' ');
    expected[8..end].copy_from_slice(&sorted);

    assert_eq!(net.save_to_bytes().unwrap(), expected);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any mutation of a valid file read from disk gives what its bytes give.
    #[test]
    fn mutated_files_read_from_disk_match_their_bytes(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in prop::option::of(any::<prop::sample::Index>()),
        extra in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let small = Net::new().push(Dense::<U3>::new()).push(Relu).push(Dense::<U2>::new());
        let mut bytes = small.bind::<U4>().save_to_bytes().unwrap();
        let span = header_end(&bytes);
        for (at, value) in edits {
            let at = at.index(span);
            bytes[at] = value;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        bytes.extend(extra);
        read_matches_from_bytes(&bytes);
    }
}

#[cfg(unix)]
#[test]
fn saving_through_a_symbolic_link_replaces_the_file_it_points_to() {
    let dir = std::env::temp_dir().join(format!("lazynet-symlink-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (target, link) = (dir.join("real.safetensors"), dir.join("link.safetensors"));
    let net = Net::new().push(Dense::<U3>::new()).seed(1).bind::<U2>();
    net.save(&target).unwrap();
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let other = Net::new().push(Dense::<U3>::new()).seed(2).bind::<U2>();
    other.save(&link).unwrap();
    let kind = std::fs::symlink_metadata(&link).unwrap().file_type();
    assert!(kind.is_symlink(), "the link stays a link");
    assert_eq!(
        std::fs::read(&target).unwrap(),
        other.save_to_bytes().unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
