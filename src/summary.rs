//! The summary table a net displays, in the spirit of Keras `model.summary()`.

use core::fmt;

use crate::list::Layers;
use crate::net::Net;
use crate::partial::Dims;
use crate::partial::PartialShape;
use crate::shape::Shape;
use crate::state::{Bound, BoundLayer, Init, Uninit};
use crate::stems::Stemmed;

struct Row {
    layer: String,
    kind: &'static str,
    /// The place whose parameters this one shares.
    tied: Option<String>,
    output: String,
    params: Vec<(String, String, Count)>,
}

/// A parameter's number of values, as far as it is known before binding.
#[derive(Clone, Copy)]
enum Count {
    /// Every size is known.
    Known(usize),
    /// A size waits for the input size.
    Unknown,
    /// Every size is known, and their product is more than a `usize` counts.
    Overflow,
}

impl Count {
    fn of(shape: &PartialShape) -> Self {
        match (shape.known(), shape.len()) {
            (None, _) => Count::Unknown,
            (Some(_), Some(n)) => Count::Known(n),
            (Some(_), None) => Count::Overflow,
        }
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::Known(n) => write!(f, "{n}"),
            Count::Unknown => f.write_str("?"),
            Count::Overflow => write!(f, "> {}", usize::MAX),
        }
    }
}

fn table(f: &mut fmt::Formatter<'_>, title: &str, rows: &[Row], footer: &str) -> fmt::Result {
    let header = ["layer", "kind", "output", "parameter", "shape", "count"];
    let mut lines: Vec<[String; 6]> = Vec::new();
    for row in rows {
        let mut first = true;
        let mut cells = |p: Option<&(String, String, Count)>| {
            let (lead, kind, out) = if first {
                (row.layer.clone(), row.kind.to_string(), row.output.clone())
            } else {
                Default::default()
            };
            first = false;
            match p {
                Some((name, shape, c)) => {
                    [lead, kind, out, name.clone(), shape.clone(), c.to_string()]
                }
                None => [
                    lead,
                    kind,
                    out,
                    String::new(),
                    String::new(),
                    "0".to_string(),
                ],
            }
        };
        if let Some(first) = &row.tied {
            let mut line = cells(None);
            line[3] = format!("(tied to {first})");
            lines.push(line);
        } else if row.params.is_empty() {
            lines.push(cells(None));
        }
        for p in &row.params {
            lines.push(cells(Some(p)));
        }
    }
    let mut widths = header.map(str::len);
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let total_width = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
    let write_line = |f: &mut fmt::Formatter<'_>, cells: &[&str]| -> fmt::Result {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            if i == cells.len() - 1 {
                s.push_str(&format!("{cell:>w$}"));
            } else {
                s.push_str(&format!("{cell:<w$}"));
            }
        }
        writeln!(f, "{}", s.trim_end())
    };
    writeln!(f, "{title}")?;
    writeln!(f, "{}", "=".repeat(total_width))?;
    write_line(f, &header)?;
    writeln!(f, "{}", "-".repeat(total_width))?;
    for line in &lines {
        write_line(f, &line.each_ref().map(String::as_str))?;
    }
    writeln!(f, "{}", "=".repeat(total_width))?;
    write!(f, "{footer}")
}

impl<L: Layers> fmt::Display for Net<Uninit, L> {
    /// The declaration's table: shapes known so far, `?` where the input size is needed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The sum of the known counts; `None` once it passes `usize::MAX`.
        let (mut known, mut unknown) = (Some(0usize), 0usize);
        let rows: Vec<Row> = self
            .describe()
            .into_iter()
            .map(|layer| Row {
                layer: layer.path,
                kind: layer.kind,
                tied: layer.tied,
                output: layer
                    .output
                    .as_ref()
                    .map_or_else(|| "?".to_string(), PartialShape::to_string),
                params: layer
                    .params
                    .into_iter()
                    .map(|(name, shape)| {
                        let n = Count::of(&shape);
                        match n {
                            Count::Known(n) => known = known.and_then(|k| k.checked_add(n)),
                            Count::Overflow => known = None,
                            Count::Unknown => unknown += 1,
                        }
                        (name, shape.to_string(), n)
                    })
                    .collect(),
            })
            .collect();
        let known = known.map_or(Count::Overflow, Count::Known);
        let footer = if unknown == 0 {
            format!("parameters: {known} (not allocated until the net is bound)")
        } else {
            format!(
                "parameters: ? ({known} known; {unknown} shape(s) wait for the input size; none allocated until the net is bound)"
            )
        };
        table(f, "Net (declared, not bound: input size ?)", &rows, &footer)
    }
}

impl<N: Shape, L: Layers> fmt::Display for Net<Init<N>, L> {
    /// The bound net's table: every shape and count.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        let title = match state.input.dims().as_slice() {
            [n] => format!("Net (bound to input size {n})"),
            dims => format!("Net (bound to input shape {})", Dims(dims)),
        };
        bound_table(f, &title, &state.layers)
    }
}

impl<E, L: Layers> fmt::Display for Net<Stemmed<E>, L> {
    /// The table of a net with stems: each stem's nodes, then the trunk's, whose later
    /// places are marked as tied to the first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inputs: Vec<String> = self
            .state()
            .inputs()
            .map(|dims| Dims(dims).to_string())
            .collect();
        let title = format!("Net (stems for inputs {})", inputs.join(", "));
        bound_table(f, &title, self.state().bound_layers())
    }
}

/// The table of bound nodes: every shape and count.
fn bound_table(f: &mut fmt::Formatter<'_>, title: &str, layers: &[BoundLayer]) -> fmt::Result {
    let rows: Vec<Row> = layers
        .iter()
        .map(|layer| Row {
            layer: layer.path.clone(),
            kind: layer.kind,
            tied: layer
                .tied
                .and_then(|t| layers.get(t))
                .map(|t| t.path.clone()),
            output: Dims(&layer.output).to_string(),
            params: layer
                .params
                .iter()
                .map(|p| {
                    (
                        p.name.clone(),
                        Dims(&p.shape).to_string(),
                        Count::Known(p.value.len()),
                    )
                })
                .collect(),
        })
        .collect();
    let total: usize = layers
        .iter()
        .flat_map(|l| &l.params)
        .map(|p| p.value.len())
        .sum();
    let buffers: usize = layers
        .iter()
        .flat_map(|l| &l.buffers)
        .map(|b| b.values().map_or(1, |v| v.len()))
        .sum();
    let footer = if buffers == 0 {
        format!("parameters: {total}")
    } else {
        format!("parameters: {total}; buffers (not learned): {buffers} values")
    };
    table(f, title, &rows, &footer)
}
