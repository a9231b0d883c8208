//! The image kernels: convolution by im2col and GEMM, max and average pooling.
//!
//! A batch is a `features × samples` matrix; each column holds one image in C, H, W order.

use nalgebra::{DMatrix, DMatrixView, DMatrixViewMut, Dyn};

use crate::layer::Activation;
use crate::spatial::Geom2d;

/// `m` transposed, as a view of its values (no copy): GEMM reads it through strides.
///
/// Only ever the right operand of a GEMM: for small matrices nalgebra's GEMM walks the left
/// operand's columns as if their rows were contiguous, which a transposed view's are not.
pub(crate) fn transposed(m: &DMatrix<f32>) -> DMatrixView<'_, f32, Dyn, Dyn> {
    DMatrixView::from_slice_with_strides_generic(
        m.as_slice(),
        Dyn(m.ncols()),
        Dyn(m.nrows()),
        Dyn(m.nrows()),
        Dyn(1),
    )
}

/// A 2-d convolution of every column of `x`, with `weight` of shape `out_c × (in_c·k·k)`
/// (PyTorch's `[out_c, in_c, k, k]` flattened row-major), then `bias` (one per output channel)
/// and `act`, fused into one pass.
///
/// Sample by sample: the patches are laid out as a `(out_h·out_w) × (in_c·k·k)` column-major
/// matrix (im2col, one column per kernel tap), and one GEMM, `patches · weightᵀ`, writes a
/// `(out_h·out_w) × out_c` column-major matrix straight into the sample's output column: that
/// is the C, H, W order, so nothing is copied back. The only buffer is one sample's patches,
/// `patches`, of shape `(out_h·out_w) × (in_c·k·k)`; `out` is `(out_c·out_h·out_w) × samples`.
/// Both are allocated by the caller, fallibly; binding checked that their sizes fit.
pub(crate) fn conv2d(
    x: &DMatrix<f32>,
    weight: &DMatrix<f32>,
    bias: Option<&[f32]>,
    g: &Geom2d,
    act: Activation,
    out: &mut DMatrix<f32>,
    taps: &mut Taps,
) {
    let pixels = g.out_h * g.out_w;
    let tap_count = weight.ncols();
    let out_c = weight.nrows();
    let Taps {
        patches,
        rows,
        cols,
    } = taps;
    debug_assert_eq!(patches.shape(), (pixels, tap_count), "conv2d: patch buffer");
    if out.is_empty() || patches.shape() != (pixels, tap_count) {
        return;
    }
    let in_len = g.c * g.h * g.w;
    // weightᵀ, `taps × out_c`, read in place: element (t, o) is weight[(o, t)].
    let weight_t = DMatrixView::from_slice_with_strides_generic(
        weight.as_slice(),
        Dyn(tap_count),
        Dyn(out_c),
        Dyn(out_c),
        Dyn(1),
    );
    let outputs = out.as_mut_slice().chunks_exact_mut(out_c * pixels);
    for (sample, target) in outputs.enumerate() {
        let image = x.as_slice().get(sample * in_len..).unwrap_or_default();
        let image = &image[..in_len.min(image.len())];
        im2col(image, g, rows, cols, patches.as_mut_slice());
        let mut y = DMatrixViewMut::from_slice(target, pixels, out_c);
        y.gemm(1.0, &*patches, &weight_t, 0.0);
        act.apply(target, bias.unwrap_or_default(), pixels);
    }
}

/// The gradients of [`conv2d`] (before its activation), sample by sample: with the sample's
/// patches `P` (`pixels × taps`, im2col again) and its output gradient `dY`
/// (`pixels × out_c`), `dWᵀ += Pᵀ·dY`, `db += ` the column sums of `dY`, and, when `dx` is
/// asked for, the patch gradient `dY·W` scattered back onto the image (col2im). `dw`, `db`
/// and `dx` are zeroed by the caller; `dpatches` is a `pixels × taps` buffer, used only
/// for `dx`, and `grad_t` an `out_c × pixels` one.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d_backward(
    x: &DMatrix<f32>,
    weight: &DMatrix<f32>,
    g: &Geom2d,
    dy: &DMatrix<f32>,
    dw: &mut DMatrix<f32>,
    mut db: Option<&mut DMatrix<f32>>,
    mut dx: Option<(&mut DMatrix<f32>, &mut DMatrix<f32>)>,
    taps: &mut Taps,
    grad_t: &mut DMatrix<f32>,
) {
    let pixels = g.out_h * g.out_w;
    let tap_count = weight.ncols();
    let out_c = weight.nrows();
    let Taps {
        patches,
        rows,
        cols,
    } = taps;
    if dy.is_empty() || patches.shape() != (pixels, tap_count) || grad_t.shape() != (out_c, pixels)
    {
        return;
    }
    let in_len = g.c * g.h * g.w;
    let gradients = dy.as_slice().chunks_exact(out_c * pixels);
    for (sample, grad) in gradients.enumerate() {
        let image = x.as_slice().get(sample * in_len..).unwrap_or_default();
        let image = &image[..in_len.min(image.len())];
        im2col(image, g, rows, cols, patches.as_mut_slice());
        let grad_view = DMatrixView::from_slice(grad, pixels, out_c);
        // dW += dYᵀ·P, with dYᵀ copied (the left operand must be contiguous).
        grad_view.transpose_to(grad_t);
        dw.gemm(1.0, &*grad_t, &*patches, 1.0);
        if let Some(db) = db.as_deref_mut() {
            for (b, channel) in db.iter_mut().zip(grad.chunks_exact(pixels.max(1))) {
                *b += channel.iter().sum::<f32>();
            }
        }
        if let Some((dx, dpatches)) = dx.as_mut() {
            dpatches.gemm(1.0, &grad_view, weight, 0.0);
            let target = dx
                .as_mut_slice()
                .get_mut(sample * in_len..)
                .unwrap_or_default();
            let len = in_len.min(target.len());
            col2im(dpatches.as_slice(), g, rows, cols, &mut target[..len]);
        }
    }
}

/// Where the kernel's taps read in the input, along each axis. It depends on the geometry
/// alone, so it is computed once per call, not once per sample and channel.
///
/// Positions in the padded input are computed in `u128`: with a huge padding or stride they
/// pass `usize::MAX` (binding checked only the sizes that are allocated), and in `u128` they
/// cannot overflow. What is stored is an index into the image, which fits in a `usize`.
pub(crate) struct Taps {
    /// The patches of one sample, `(out_h·out_w) × (in_c·k·k)`, rewritten for every sample.
    patches: DMatrix<f32>,
    /// For kernel row `ki`: the run of output rows that read inside the image ([`Run`]).
    rows: Vec<Run>,
    /// For kernel column `kj`: the run of output columns that read inside the image.
    cols: Vec<Run>,
}

/// Along one axis, for one kernel offset: the output positions `lo..hi` whose input position is
/// inside the image (padding around them), and the input position under `lo`; the input
/// position under `o` in the run is `start + (o − lo)·stride`, less than the image's size.
#[derive(Clone, Copy)]
struct Run {
    lo: usize,
    hi: usize,
    start: usize,
}

impl Run {
    /// The input position under output position `o` of the run, if `o` is in it.
    #[inline(always)]
    fn at(&self, o: usize, stride: usize) -> Option<usize> {
        (self.lo..self.hi)
            .contains(&o)
            .then(|| self.start + (o - self.lo) * stride)
    }
}

impl Taps {
    /// The taps of `g`, with `patches` to write them into; `None` when memory for them cannot
    /// be had.
    pub(crate) fn new(g: &Geom2d, patches: DMatrix<f32>) -> Option<Self> {
        // No patches (no input channels, or no output pixels): nothing reads the input, and
        // the tables (2·k runs) could be far larger than the patches (k·k·in_c per pixel).
        if patches.is_empty() {
            return Some(Taps {
                patches,
                rows: Vec::new(),
                cols: Vec::new(),
            });
        }
        Some(Taps {
            patches,
            rows: runs(g, g.out_h, g.h)?,
            cols: runs(g, g.out_w, g.w)?,
        })
    }
}

/// The [`Run`] of every kernel offset along an axis of input `size` and output `out`.
fn runs(g: &Geom2d, out: usize, size: usize) -> Option<Vec<Run>> {
    let mut runs = crate::alloc::try_vec(g.kernel)?;
    for k in 0..g.kernel {
        let d = wide(k) * wide(g.dilation);
        // The input position under output position `o`, in the padded input's coordinates.
        let padded = |o: usize| wide(o) * wide(g.stride) + d;
        let inside = |o: usize| {
            padded(o)
                .checked_sub(wide(g.padding))
                .filter(|&p| p < wide(size))
                .and_then(|p| usize::try_from(p).ok())
        };
        let lo = (0..out)
            .find(|&o| padded(o) >= wide(g.padding))
            .unwrap_or(out);
        let hi = (lo..out).find(|&o| inside(o).is_none()).unwrap_or(out);
        runs.push(match inside(lo) {
            Some(start) if lo < hi => Run { lo, hi, start },
            _ => Run {
                lo,
                hi: lo,
                start: 0,
            },
        });
    }
    Some(runs)
}

/// Writes the patches of one image into `patches`, a `(out_h·out_w) × (in_c·k·k)` column-major
/// matrix: the column of tap (channel, kernel row, kernel column) holds, for every output
/// pixel, the input value under that tap, with zeros for the padding.
#[inline(always)]
fn im2col(image: &[f32], g: &Geom2d, rows: &[Run], cols: &[Run], patches: &mut [f32]) {
    let pixels = g.out_h * g.out_w;
    let mut columns = patches.chunks_exact_mut(pixels.max(1));
    for plane in image.chunks_exact((g.h * g.w).max(1)).take(g.c) {
        for row_run in rows {
            for col in cols {
                let Some(column) = columns.next() else { return };
                let lines = column.chunks_exact_mut(g.out_w.max(1)).enumerate();
                for (oi, out_row) in lines {
                    let Some(r) = row_run.at(oi, g.stride) else {
                        out_row.fill(0.0);
                        continue;
                    };
                    let row = &plane[r * g.w..][..g.w];
                    let (lo, hi) = (col.lo, col.hi);
                    out_row[..lo].fill(0.0);
                    out_row[hi..].fill(0.0);
                    if lo == hi {
                        continue;
                    }
                    if g.stride == 1 {
                        out_row[lo..hi].copy_from_slice(&row[col.start..][..hi - lo]);
                    } else {
                        let taps = row[col.start..].iter().step_by(g.stride);
                        for (slot, v) in out_row[lo..hi].iter_mut().zip(taps) {
                            *slot = *v;
                        }
                    }
                }
            }
        }
    }
}

/// The reverse of [`im2col`]: adds every patch value back onto the image value it was read
/// from (values read from padding are dropped).
fn col2im(patches: &[f32], g: &Geom2d, rows: &[Run], cols: &[Run], image: &mut [f32]) {
    let pixels = g.out_h * g.out_w;
    let mut columns = patches.chunks_exact(pixels.max(1));
    for plane in image.chunks_exact_mut((g.h * g.w).max(1)).take(g.c) {
        for row_run in rows {
            for col in cols {
                let Some(column) = columns.next() else { return };
                if col.lo == col.hi {
                    continue;
                }
                for (oi, out_row) in column.chunks_exact(g.out_w.max(1)).enumerate() {
                    let Some(r) = row_run.at(oi, g.stride) else {
                        continue;
                    };
                    let row = &mut plane[r * g.w..][..g.w];
                    let values = &out_row[col.lo..col.hi];
                    let targets = row[col.start..].iter_mut().step_by(g.stride);
                    for (slot, v) in targets.zip(values) {
                        *slot += v;
                    }
                }
            }
        }
    }
}

/// Max pooling of every column of `x` into `out`; padding never wins, and a NaN in a window
/// is its maximum (PyTorch's CPU kernel: `val > max || isnan(val)`), so NaN propagates.
///
/// `f32::max` skips NaN, and the NaN-aware maximum costs 4 % of a LeNet forward pass, so the
/// batch is scanned for NaN first (a vectorized pass) and the NaN-aware maximum runs only when
/// there is one.
pub(crate) fn max_pool(x: &DMatrix<f32>, g: &Geom2d, out: &mut DMatrix<f32>) {
    if has_nan(x.as_slice()) {
        pool(x, g, out, f32::NEG_INFINITY, nan_max, |m| m);
    } else {
        pool(x, g, out, f32::NEG_INFINITY, f32::max, |m| m);
    }
}

/// Whether `values` hold a NaN: blocks of 64 without early exit, so each block vectorizes.
fn has_nan(values: &[f32]) -> bool {
    values
        .chunks(64)
        .any(|block| block.iter().fold(false, |seen, v| seen | v.is_nan()))
}

/// The larger of `a` and `v`, NaN when either is: NaN wins once seen and stays.
#[inline(always)]
fn nan_max(a: f32, v: f32) -> f32 {
    if v > a || v.is_nan() {
        v
    } else {
        a
    }
}

/// Average pooling of every column of `x` into `out`; padding counts as zeros, so each
/// window's sum is divided by `k·k` (PyTorch's `count_include_pad=True`).
pub(crate) fn avg_pool(x: &DMatrix<f32>, g: &Geom2d, out: &mut DMatrix<f32>) {
    // `k·k` in floating point: it may not fit in a `usize`. PyTorch divides the `f32` sum by
    // the area converted to `f32`; so does this, unless that conversion is infinite (a kernel
    // near 2^64, where PyTorch's `int64` area has long overflowed): then in `f64`.
    let area = g.kernel as f64 * g.kernel as f64;
    let area32 = area as f32;
    if area32.is_finite() {
        pool(x, g, out, 0.0, |a, b| a + b, |s| s / area32);
    } else {
        let wide = |s: f32| (f64::from(s) / area) as f32;
        pool(x, g, out, 0.0, |a, b| a + b, wide);
    }
}

fn pool(
    x: &DMatrix<f32>,
    g: &Geom2d,
    out: &mut DMatrix<f32>,
    start: f32,
    fold: impl Fn(f32, f32) -> f32,
    finish: impl Fn(f32) -> f32,
) {
    let (in_plane, out_plane) = (g.h * g.w, g.out_h * g.out_w);
    if out.is_empty() || in_plane == 0 {
        return;
    }
    let (rows, cols) = windows(g);
    let tiled = g.padding == 0 && g.stride == g.kernel;
    let inputs = x.as_slice().chunks_exact(in_plane);
    let outputs = out.as_mut_slice().chunks_exact_mut(out_plane);
    // One input plane (a channel of a sample) gives one output plane, row by row: each input
    // row under a window row is folded into the whole output row.
    for (plane, target) in inputs.zip(outputs) {
        for (out_row, window_rows) in target.chunks_exact_mut(g.out_w).zip(&rows) {
            out_row.fill(start);
            for line in plane
                .chunks_exact(g.w)
                .take(window_rows.end)
                .skip(window_rows.start)
            {
                if tiled {
                    // Windows side by side, no padding: the common `MaxPool2d::<U2>` case.
                    for (slot, window) in out_row.iter_mut().zip(line.chunks_exact(g.kernel)) {
                        *slot = window.iter().fold(*slot, |a, v| fold(a, *v));
                    }
                    continue;
                }
                for (slot, window_cols) in out_row.iter_mut().zip(&cols) {
                    *slot = line[window_cols.clone()]
                        .iter()
                        .fold(*slot, |a, v| fold(a, *v));
                }
            }
            out_row.iter_mut().for_each(|v| *v = finish(*v));
        }
    }
}

/// The gradient of [`max_pool`]: each window's output gradient goes to the window's largest
/// input, the first one on ties and the last NaN when there is one (PyTorch's CPU kernel).
/// `dx` is zeroed by the caller.
pub(crate) fn max_pool_backward(
    x: &DMatrix<f32>,
    g: &Geom2d,
    dy: &DMatrix<f32>,
    dx: &mut DMatrix<f32>,
) {
    // As in the forward pass, the NaN-aware comparison runs only when there is a NaN.
    if has_nan(x.as_slice()) {
        max_pool_backward_with::<true>(x, g, dy, dx);
    } else {
        max_pool_backward_with::<false>(x, g, dy, dx);
    }
}

/// [`max_pool_backward`], compiled with and without the NaN test.
fn max_pool_backward_with<const NAN: bool>(
    x: &DMatrix<f32>,
    g: &Geom2d,
    dy: &DMatrix<f32>,
    dx: &mut DMatrix<f32>,
) {
    let (in_plane, out_plane) = (g.h * g.w, g.out_h * g.out_w);
    if dy.is_empty() || in_plane == 0 || out_plane == 0 {
        return;
    }
    let (rows, cols) = windows(g);
    let planes = x.as_slice().chunks_exact(in_plane);
    let targets = dx.as_mut_slice().chunks_exact_mut(in_plane);
    let grads = dy.as_slice().chunks_exact(out_plane);
    for ((plane, target), grad) in planes.zip(targets).zip(grads) {
        for (window_rows, grad_row) in rows.iter().zip(grad.chunks_exact(g.out_w)) {
            for (window_cols, &d) in cols.iter().zip(grad_row) {
                // PyTorch starts at the window's first position with −∞, so a window of −∞
                // sends its gradient to its first value.
                let mut best = window_rows.start * g.w + window_cols.start;
                let mut max = f32::NEG_INFINITY;
                for r in window_rows.clone() {
                    let start = r * g.w + window_cols.start;
                    let Some(line) = plane.get(start..start + window_cols.len()) else {
                        continue;
                    };
                    for (k, &v) in line.iter().enumerate() {
                        if v > max || (NAN && v.is_nan()) {
                            max = v;
                            best = start + k;
                        }
                    }
                }
                if let Some(slot) = target.get_mut(best) {
                    *slot += d;
                }
            }
        }
    }
}

/// The gradient of [`avg_pool`]: each window's output gradient, divided by the window's area
/// (padding included), goes to every input in the window. `dx` is zeroed by the caller.
pub(crate) fn avg_pool_backward(g: &Geom2d, dy: &DMatrix<f32>, dx: &mut DMatrix<f32>) {
    let (in_plane, out_plane) = (g.h * g.w, g.out_h * g.out_w);
    if dy.is_empty() || in_plane == 0 {
        return;
    }
    let area = g.kernel as f64 * g.kernel as f64;
    let area32 = area as f32;
    let share = |d: f32| {
        if area32.is_finite() {
            d / area32
        } else {
            (f64::from(d) / area) as f32
        }
    };
    let (rows, cols) = windows(g);
    let targets = dx.as_mut_slice().chunks_exact_mut(in_plane);
    for (target, grad) in targets.zip(dy.as_slice().chunks_exact(out_plane)) {
        let mut grads = grad.iter();
        for window_rows in &rows {
            for window_cols in &cols {
                let Some(&d) = grads.next() else { return };
                let d = share(d);
                for r in window_rows.clone() {
                    for slot in &mut target[r * g.w..][window_cols.clone()] {
                        *slot += d;
                    }
                }
            }
        }
    }
}

/// The input rows and columns of every output row and column of a pooling window.
fn windows(g: &Geom2d) -> (Vec<core::ops::Range<usize>>, Vec<core::ops::Range<usize>>) {
    let rows = (0..g.out_h)
        .map(|o| window(o, g.stride, g.padding, g.kernel, g.h))
        .collect();
    let cols = (0..g.out_w)
        .map(|o| window(o, g.stride, g.padding, g.kernel, g.w))
        .collect();
    (rows, cols)
}

/// The input positions, padding left out, under the window at output position `o`. In
/// `u128`, where `o·stride + kernel` cannot overflow.
fn window(
    o: usize,
    stride: usize,
    padding: usize,
    kernel: usize,
    size: usize,
) -> core::ops::Range<usize> {
    let first = wide(o) * wide(stride);
    // A position in the padded input, as an index into the image, clamped to it: the part of
    // the window over the left padding starts at 0, the part past the image ends at `size`.
    let clamp = |p: u128| {
        let p = p.saturating_sub(wide(padding)).min(wide(size));
        usize::try_from(p).unwrap_or(size)
    };
    let (lo, hi) = (clamp(first), clamp(first + wide(kernel)));
    lo..hi.max(lo)
}

/// A size or position as a `u128`, where sums and products of two never overflow.
#[inline(always)]
fn wide(n: usize) -> u128 {
    n as u128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_is_found_in_any_block() {
        for at in [0, 63, 64, 100, 129] {
            let mut v = vec![1.0f32; 130];
            assert!(!has_nan(&v));
            v[at] = f32::NAN;
            assert!(has_nan(&v), "NaN at {at}");
        }
        assert!(!has_nan(&[f32::INFINITY, f32::NEG_INFINITY]));
        assert!(!has_nan(&[]));
    }

    #[test]
    fn max_pool_gradients_go_to_the_first_maximum_and_the_last_nan() {
        // One 2×2 window per case: [a, b; c, d].
        let g = Geom2d::new(&[1, 2, 2], [2, 2, 0, 1]);
        let grad = |x: [f32; 4]| {
            let x = DMatrix::from_column_slice(4, 1, &x);
            let mut dx = DMatrix::zeros(4, 1);
            max_pool_backward(&x, &g, &DMatrix::from_element(1, 1, 1.0), &mut dx);
            dx.as_slice().to_vec()
        };
        assert_eq!(grad([1.0, 3.0, 3.0, 2.0]), [0.0, 1.0, 0.0, 0.0]);
        assert_eq!(grad([5.0, 5.0, 5.0, 5.0]), [1.0, 0.0, 0.0, 0.0]);
        let nan = f32::NAN;
        assert_eq!(grad([nan, 9.0, nan, 1.0]), [0.0, 0.0, 1.0, 0.0]);
        let inf = f32::NEG_INFINITY;
        assert_eq!(grad([inf, inf, inf, inf]), [1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn no_input_channels_give_the_bias() {
        let g = Geom2d::new(&[0, 3, 3], [2, 1, 0, 1]);
        let mut y = DMatrix::zeros(8, 2);
        conv2d(
            &DMatrix::zeros(0, 2),
            &DMatrix::zeros(2, 0),
            Some(&[1.0, -1.0]),
            &g,
            Activation::Relu,
            &mut y,
            &mut Taps::new(&g, DMatrix::zeros(4, 0)).unwrap(),
        );
        assert_eq!(y.shape(), (8, 2));
        assert_eq!(
            y.column(1).as_slice(),
            [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
        );
    }
}
