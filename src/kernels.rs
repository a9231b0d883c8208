//! The image kernels: convolution by im2col and GEMM, max and average pooling.
//!
//! A batch is a `features × samples` matrix; each column holds one image in C, H, W order.

use nalgebra::DMatrix;

use crate::layer::{Activation, ConvGeom, PoolGeom};

/// The most values the im2col buffer holds (4 MiB of `f32`), unless a single sample's patches
/// need more: a batch is convolved in chunks of samples that fit.
pub(crate) const PATCH_BUDGET: usize = 1 << 20;

/// How many samples one chunk of the convolution takes, so that their patches fit in
/// [`PATCH_BUDGET`] values (at least one sample, at most `samples`).
pub(crate) fn samples_per_chunk(g: &ConvGeom, samples: usize) -> usize {
    let per_sample = (g.in_c * g.kernel * g.kernel)
        .saturating_mul(g.out_h * g.out_w)
        .max(1);
    (PATCH_BUDGET / per_sample).clamp(1, samples.max(1))
}

/// A 2-d convolution of every column of `x`, with `weight` of shape
/// `out_c × (in_c·k·k)` (PyTorch's `[out_c, in_c, k, k]` flattened row-major), then `bias`
/// (one per output channel) and `act`, fused into one pass.
///
/// For each chunk of samples, the patches are laid out as a `(in_c·k·k) × (samples·out_h·out_w)`
/// matrix (im2col), multiplied by the weight in one GEMM, and the result is written back in
/// C, H, W order.
pub(crate) fn conv2d(
    x: &DMatrix<f32>,
    weight: &DMatrix<f32>,
    bias: Option<&[f32]>,
    g: &ConvGeom,
    act: Activation,
) -> DMatrix<f32> {
    let samples = x.ncols();
    let pixels = g.out_h * g.out_w;
    let rows = g.in_c * g.kernel * g.kernel;
    let mut out = DMatrix::<f32>::zeros(g.out_c * pixels, samples);
    if out.is_empty() {
        return out;
    }
    let chunk = samples_per_chunk(g, samples);
    let mut patches = DMatrix::<f32>::zeros(rows, chunk * pixels);
    let mut product = DMatrix::<f32>::zeros(g.out_c, chunk * pixels);
    let in_len = g.in_c * g.h * g.w;
    let out_len = g.out_c * pixels;
    let mut start = 0;
    while start < samples {
        let n = chunk.min(samples - start);
        let images = &x.as_slice()[start * in_len..];
        for (s, block) in patches
            .as_mut_slice()
            .chunks_exact_mut(rows * pixels)
            .take(n)
            .enumerate()
        {
            im2col(&images[s * in_len..][..in_len], g, block);
        }
        let cols = n * pixels;
        product
            .columns_mut(0, cols)
            .gemm(1.0, weight, &patches.columns(0, cols), 0.0);
        let results = product.as_slice().chunks_exact(g.out_c * pixels);
        let targets = out.as_mut_slice()[start * out_len..].chunks_exact_mut(out_len);
        for (result, target) in results.zip(targets).take(n) {
            // `result` is out_c × pixels, column-major (pixel-major); `target` is C, H, W.
            for (p, column) in result.chunks_exact(g.out_c).enumerate() {
                for (c, v) in column.iter().enumerate() {
                    target[c * pixels + p] = *v;
                }
            }
            for (c, channel) in target.chunks_exact_mut(pixels).enumerate() {
                let b = bias.and_then(|b| b.get(c)).copied().unwrap_or(0.0);
                act.apply_plus(channel, b);
            }
        }
        start += n;
    }
    out
}

/// Writes the patches of one image into `block`, an `(in_c·k·k) × (out_h·out_w)` column-major
/// matrix: column `p` holds the input values under the kernel at output pixel `p`, in
/// (channel, kernel row, kernel column) order, with zeros for the padding.
fn im2col(image: &[f32], g: &ConvGeom, block: &mut [f32]) {
    let k = g.kernel;
    let mut out = block.iter_mut();
    for oi in 0..g.out_h {
        for oj in 0..g.out_w {
            for c in 0..g.in_c {
                let plane = &image[c * g.h * g.w..][..g.h * g.w];
                for ki in 0..k {
                    // The input row, if it is not padding.
                    let row = (oi * g.stride + ki * g.dilation)
                        .checked_sub(g.padding)
                        .filter(|&r| r < g.h)
                        .map(|r| &plane[r * g.w..][..g.w]);
                    for kj in 0..k {
                        let value = row.and_then(|row| {
                            (oj * g.stride + kj * g.dilation)
                                .checked_sub(g.padding)
                                .and_then(|col| row.get(col))
                        });
                        if let Some(slot) = out.next() {
                            *slot = value.copied().unwrap_or(0.0);
                        }
                    }
                }
            }
        }
    }
}

/// Max pooling of every column of `x`; padding never wins.
pub(crate) fn max_pool(x: &DMatrix<f32>, g: &PoolGeom) -> DMatrix<f32> {
    pool(x, g, f32::NEG_INFINITY, f32::max, |m| m)
}

/// Average pooling of every column of `x`; padding counts as zeros, so each window's sum is
/// divided by `k·k` (PyTorch's `count_include_pad=True`).
pub(crate) fn avg_pool(x: &DMatrix<f32>, g: &PoolGeom) -> DMatrix<f32> {
    let area = (g.kernel * g.kernel) as f32;
    pool(x, g, 0.0, |a, b| a + b, |s| s / area)
}

fn pool(
    x: &DMatrix<f32>,
    g: &PoolGeom,
    start: f32,
    fold: impl Fn(f32, f32) -> f32,
    finish: impl Fn(f32) -> f32,
) -> DMatrix<f32> {
    let (in_plane, out_plane) = (g.h * g.w, g.out_h * g.out_w);
    let mut out = DMatrix::<f32>::zeros(g.c * out_plane, x.ncols());
    if out.is_empty() || in_plane == 0 {
        return out;
    }
    let inputs = x.as_slice().chunks_exact(in_plane);
    let outputs = out.as_mut_slice().chunks_exact_mut(out_plane);
    // One input plane (a channel of a sample) gives one output plane.
    for (plane, target) in inputs.zip(outputs) {
        let mut slots = target.iter_mut();
        for oi in 0..g.out_h {
            let rows = window(oi, g.stride, g.padding, g.kernel, g.h);
            for oj in 0..g.out_w {
                let cols = window(oj, g.stride, g.padding, g.kernel, g.w);
                let mut acc = start;
                for r in rows.clone() {
                    for v in &plane[r * g.w..][cols.clone()] {
                        acc = fold(acc, *v);
                    }
                }
                if let Some(slot) = slots.next() {
                    *slot = finish(acc);
                }
            }
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
