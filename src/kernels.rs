//! The image kernels: convolution by im2col and GEMM, max and average pooling.
//!
//! A batch is a `features × samples` matrix; each column holds one image in C, H, W order.

use nalgebra::{DMatrix, DMatrixView, DMatrixViewMut, Dyn};

use crate::layer::Activation;
use crate::spatial::Geom2d;

/// A 2-d convolution of every column of `x`, with `weight` of shape `out_c × (in_c·k·k)`
/// (PyTorch's `[out_c, in_c, k, k]` flattened row-major), then `bias` (one per output channel)
/// and `act`, fused into one pass.
///
/// Sample by sample: the patches are laid out as a `(out_h·out_w) × (in_c·k·k)` column-major
/// matrix (im2col, one column per kernel tap), and one GEMM, `patches · weightᵀ`, writes a
/// `(out_h·out_w) × out_c` column-major matrix straight into the sample's output column: that is
/// the C, H, W order, so nothing is copied back. The only buffer is one sample's patches.
pub(crate) fn conv2d(
    x: &DMatrix<f32>,
    weight: &DMatrix<f32>,
    bias: Option<&[f32]>,
    g: &Geom2d,
    out_c: usize,
    act: Activation,
) -> DMatrix<f32> {
    let pixels = g.out_h * g.out_w;
    let taps = g.c * g.kernel * g.kernel;
    let mut out = DMatrix::<f32>::zeros(out_c * pixels, x.ncols());
    if out.is_empty() {
        return out;
    }
    let in_len = g.c * g.h * g.w;
    let mut patches = DMatrix::<f32>::zeros(pixels, taps);
    // weightᵀ, `taps × out_c`, read in place: element (t, o) is weight[(o, t)].
    let weight_t = DMatrixView::from_slice_with_strides_generic(
        weight.as_slice(),
        Dyn(taps),
        Dyn(out_c),
        Dyn(out_c),
        Dyn(1),
    );
    let outputs = out.as_mut_slice().chunks_exact_mut(out_c * pixels);
    for (sample, target) in outputs.enumerate() {
        let image = x.as_slice().get(sample * in_len..).unwrap_or_default();
        im2col(&image[..in_len.min(image.len())], g, patches.as_mut_slice());
        let mut y = DMatrixViewMut::from_slice(target, pixels, out_c);
        y.gemm(1.0, &patches, &weight_t, 0.0);
        for (c, channel) in target.chunks_exact_mut(pixels).enumerate() {
            let b = bias.and_then(|b| b.get(c)).copied().unwrap_or(0.0);
            act.apply_plus(channel, b);
        }
    }
    out
}

/// Writes the patches of one image into `patches`, a `(out_h·out_w) × (in_c·k·k)` column-major
/// matrix: the column of tap (channel, kernel row, kernel column) holds, for every output
/// pixel, the input value under that tap, with zeros for the padding.
fn im2col(image: &[f32], g: &Geom2d, patches: &mut [f32]) {
    let k = g.kernel;
    let pixels = g.out_h * g.out_w;
    let mut columns = patches.chunks_exact_mut(pixels.max(1));
    for plane in image.chunks_exact((g.h * g.w).max(1)).take(g.c) {
        for ki in 0..k {
            for kj in 0..k {
                let Some(column) = columns.next() else { return };
                let (dy, dx) = (ki * g.dilation, kj * g.dilation);
                // The output columns `oj` whose input column `oj·s + dx − p` is inside the
                // image: a run from `lo` to `hi`, zeros around it.
                let first = |o: usize| o * g.stride + dx;
                let lo = (0..g.out_w)
                    .find(|&o| first(o) >= g.padding)
                    .unwrap_or(g.out_w);
                let hi = (lo..g.out_w)
                    .find(|&o| first(o) - g.padding >= g.w)
                    .unwrap_or(g.out_w);
                for (oi, out_row) in column.chunks_exact_mut(g.out_w.max(1)).enumerate() {
                    let row = (oi * g.stride + dy)
                        .checked_sub(g.padding)
                        .filter(|&r| r < g.h)
                        .map(|r| &plane[r * g.w..][..g.w]);
                    let Some(row) = row else {
                        out_row.fill(0.0);
                        continue;
                    };
                    out_row[..lo].fill(0.0);
                    out_row[hi..].fill(0.0);
                    if lo == hi {
                        continue;
                    }
                    let start = first(lo) - g.padding;
                    if g.stride == 1 {
                        out_row[lo..hi].copy_from_slice(&row[start..][..hi - lo]);
                    } else {
                        let taps = row[start..].iter().step_by(g.stride);
                        for (slot, v) in out_row[lo..hi].iter_mut().zip(taps) {
                            *slot = *v;
                        }
                    }
                }
            }
        }
    }
}

/// Max pooling of every column of `x`; padding never wins.
pub(crate) fn max_pool(x: &DMatrix<f32>, g: &Geom2d) -> DMatrix<f32> {
    pool(x, g, f32::NEG_INFINITY, f32::max, |m| m)
}

/// Average pooling of every column of `x`; padding counts as zeros, so each window's sum is
/// divided by `k·k` (PyTorch's `count_include_pad=True`).
pub(crate) fn avg_pool(x: &DMatrix<f32>, g: &Geom2d) -> DMatrix<f32> {
    let area = (g.kernel * g.kernel) as f32;
    pool(x, g, 0.0, |a, b| a + b, |s| s / area)
}

fn pool(
    x: &DMatrix<f32>,
    g: &Geom2d,
    start: f32,
    fold: impl Fn(f32, f32) -> f32,
    finish: impl Fn(f32) -> f32,
) -> DMatrix<f32> {
    let (in_plane, out_plane) = (g.h * g.w, g.out_h * g.out_w);
    let mut out = DMatrix::<f32>::zeros(g.c * out_plane, x.ncols());
    if out.is_empty() || in_plane == 0 {
        return out;
    }
    let rows: Vec<_> = (0..g.out_h)
        .map(|o| window(o, g.stride, g.padding, g.kernel, g.h))
        .collect();
    let cols: Vec<_> = (0..g.out_w)
        .map(|o| window(o, g.stride, g.padding, g.kernel, g.w))
        .collect();
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
    out
}

/// The input positions, padding left out, under the window at output position `o`.
fn window(
    o: usize,
    stride: usize,
    padding: usize,
    kernel: usize,
    size: usize,
) -> core::ops::Range<usize> {
    let first = o * stride;
    let lo = first.saturating_sub(padding).min(size);
    let hi = (first + kernel).saturating_sub(padding).min(size);
    lo..hi.max(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_input_channels_give_the_bias() {
        let g = Geom2d::new(&[0, 3, 3], [2, 1, 0, 1]);
        let y = conv2d(
            &DMatrix::zeros(0, 2),
            &DMatrix::zeros(2, 0),
            Some(&[1.0, -1.0]),
            &g,
            2,
            Activation::Relu,
        );
        assert_eq!(y.shape(), (8, 2));
        assert_eq!(
            y.column(1).as_slice(),
            [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
        );
    }
}
