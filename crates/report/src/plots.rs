//! The figures PEFT papers show, drawn with plotters as SVG and PNG: accuracy against trainable
//! parameters (log scale) with the Pareto front marked, accuracy against adapter bytes on disk, and
//! per-task bars with 95% interval error bars, and for class-incremental suites the accuracy on
//! all classes seen against the number of classes seen, one line per method.
//!
//! Text is rendered with DejaVu Sans embedded in this crate (`fonts/`, via plotters' `ab_glyph`
//! feature), so the PNGs look the same on a clean machine or CI runner without system fonts or
//! fontconfig; the SVGs name the font family `sans-serif`.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{Averaging, Leaderboard};

/// A written figure: title and paths relative to the reports directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figure {
    pub title: String,
    pub svg: String,
    pub png: String,
}

const FONT: &[u8] = include_bytes!("../fonts/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

/// Colour-blind-safe qualitative palette (Okabe & Ito), then darker repeats.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(240, 228, 66),
    RGBColor(0, 0, 0),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is part of the binary; failing to parse it is a build defect.
        if plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            panic!("the embedded DejaVu Sans font does not parse");
        }
    });
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a figure: {e:?}")
}

/// One point per row: label, x, accuracy.
type Points = Vec<(String, f64, f64)>;

/// Writes the figures of `board` under `<reports_dir>/<suite>/` (SVG and PNG each) and returns
/// them; figures without data (no row with both values) are skipped.
pub fn write_figures(board: &Leaderboard, reports_dir: &Path) -> Result<Vec<Figure>> {
    register_font();
    let stem = board.file_stem();
    let dir = reports_dir.join(&stem);
    let averaging = board.headline_averaging();
    let accuracy_title = match averaging {
        Some(Averaging::GroupMean) => "Group-mean accuracy (%)",
        _ => "Mean accuracy (%)",
    };
    let headline = |row: &crate::LeaderboardRow| {
        let a = averaging?;
        row.averages
            .iter()
            .find(|c| c.averaging == a)
            .and_then(|c| c.value)
    };
    let mut figures = Vec::new();

    let by_params: Points = board
        .rows
        .iter()
        .filter_map(|r| Some((r.label.clone(), r.trainable?.params, headline(r)?)))
        .filter(|(_, x, _)| *x > 0.0)
        .collect();
    if !by_params.is_empty() {
        let title = format!("{}: accuracy vs trainable parameters", board.suite);
        let name = "accuracy-vs-params";
        let plot = Plot::Scatter {
            title: &title,
            points: &by_params,
            x_desc: "Trainable parameters (log scale)",
            y_desc: accuracy_title,
        };
        render(&dir, name, (900, 600), &plot)?;
        figures.push(figure(&stem, name, title));
    }

    let by_bytes: Points = board
        .rows
        .iter()
        .filter_map(|r| Some((r.label.clone(), r.cost.adapter_bytes?, headline(r)?)))
        .filter(|(_, x, _)| *x > 0.0)
        .collect();
    if !by_bytes.is_empty() {
        let title = format!("{}: accuracy vs adapter size", board.suite);
        let name = "accuracy-vs-adapter-bytes";
        let plot = Plot::Scatter {
            title: &title,
            points: &by_bytes,
            x_desc: "Adapter bytes on disk (log scale)",
            y_desc: accuracy_title,
        };
        render(&dir, name, (900, 600), &plot)?;
        figures.push(figure(&stem, name, title));
    }

    if board
        .rows
        .iter()
        .any(|r| r.cells.iter().any(|c| c.summary.is_some()))
    {
        let title = format!("{}: accuracy per task (95% intervals)", board.suite);
        let name = "per-task";
        let width =
            (160 + board.tasks.len() * (24 * board.rows.len() + 40)).clamp(900, 4000) as u32;
        render(
            &dir,
            name,
            (width, 600),
            &Plot::PerTask {
                title: &title,
                board,
            },
        )?;
        figures.push(figure(&stem, name, title));
    }

    if let Some(table) = &board.continual {
        let tasks: Vec<&String> = board
            .tasks
            .iter()
            .filter(|t| table.rows.iter().any(|r| &r.task == *t))
            .collect();
        for task in &tasks {
            let lines: Vec<(String, Vec<(f64, f64)>)> = table
                .rows
                .iter()
                .filter(|r| &&r.task == task && !r.curve.is_empty())
                .map(|r| {
                    let points = r.curve.iter().map(|&(n, a)| (n as f64, a)).collect();
                    (r.label.clone(), points)
                })
                .collect();
            let title = format!("{}: {task}, accuracy on the classes seen", board.suite);
            let name = if tasks.len() == 1 {
                "accuracy-curve".to_string()
            } else {
                format!("accuracy-curve-{task}")
            };
            render(
                &dir,
                &name,
                (900, 600),
                &Plot::Curves {
                    title: &title,
                    lines: &lines,
                },
            )?;
            figures.push(figure(&stem, &name, title));
        }
    }
    Ok(figures)
}

fn figure(stem: &str, name: &str, title: String) -> Figure {
    Figure {
        title,
        svg: format!("{stem}/{name}.svg"),
        png: format!("{stem}/{name}.png"),
    }
}

/// What to draw; drawn once per backend.
enum Plot<'a> {
    Scatter {
        title: &'a str,
        points: &'a Points,
        x_desc: &'a str,
        y_desc: &'a str,
    },
    PerTask {
        title: &'a str,
        board: &'a Leaderboard,
    },
    /// One line per method: (classes seen, accuracy in percent) points.
    Curves {
        title: &'a str,
        lines: &'a [(String, Vec<(f64, f64)>)],
    },
}

impl Plot<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        match self {
            Plot::Scatter {
                title,
                points,
                x_desc,
                y_desc,
            } => scatter(root, title, points, x_desc, y_desc),
            Plot::PerTask { title, board } => per_task(root, title, board),
            Plot::Curves { title, lines } => curves(root, title, lines),
        }
    }
}

/// Draws `plot` once as SVG and once as PNG, writing both atomically.
fn render(dir: &Path, name: &str, size: (u32, u32), plot: &Plot<'_>) -> Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        plot.draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    peftbench_records::write_atomic(&dir.join(format!("{name}.svg")), svg.as_bytes())?;

    let mut pixels = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        plot.draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &pixels,
        size.0,
        size.1,
        image::ExtendedColorType::Rgb8,
    )?;
    peftbench_records::write_atomic(&dir.join(format!("{name}.png")), &png)
}

/// Indices of the Pareto-optimal points: no other point has fewer-or-equal x and higher accuracy.
pub fn pareto_front(points: &[(String, f64, f64)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| {
        points[a]
            .1
            .total_cmp(&points[b].1)
            .then(points[b].2.total_cmp(&points[a].2))
    });
    let mut best = f64::NEG_INFINITY;
    let mut front = Vec::new();
    for i in order {
        if points[i].2 > best {
            best = points[i].2;
            front.push(i);
        }
    }
    front
}

/// A log-x scatter of accuracy with labelled points; the Pareto front is joined by a line and its
/// points are filled, dominated points hollow.
fn scatter<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    points: &Points,
    x_desc: &str,
    y_desc: &str,
) -> Result<()> {
    root.fill(&WHITE).map_err(plot_err)?;
    let (xmin, xmax) = points.iter().fold((f64::INFINITY, 0f64), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let (ymin, ymax) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.2), hi.max(p.2))
        });
    let pad = ((ymax - ymin) * 0.15).max(2.0);
    let y_range = (ymin - pad).max(0.0)..(ymax + pad).min(100.0);
    let x_range = (xmin / 3.0)..(xmax * 3.0);
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FAMILY, 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range.log_scale(), y_range)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| log_tick_label(*x))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(plot_err)?;

    let front = pareto_front(points);
    if front.len() > 1 {
        let line: Vec<(f64, f64)> = front.iter().map(|&i| (points[i].1, points[i].2)).collect();
        chart
            .draw_series(LineSeries::new(line, RGBColor(200, 30, 30).stroke_width(2)))
            .map_err(plot_err)?
            .label("Pareto front")
            .legend(|(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 20, y)],
                    RGBColor(200, 30, 30).stroke_width(2),
                )
            });
    }
    // Methods at the same point (same parameter count and accuracy) share one marker and label.
    let mut shared: Vec<(f64, f64, Vec<usize>)> = Vec::new();
    for (i, (_, x, y)) in points.iter().enumerate() {
        match shared.iter_mut().find(|(sx, sy, _)| sx == x && sy == y) {
            Some((_, _, members)) => members.push(i),
            None => shared.push((*x, *y, vec![i])),
        }
    }
    // Labels right of their marker, alternately above and below in x order, so neighbours do
    // not print over each other; a marker with another close by in x puts its label on the side
    // away from it (the higher one above, the lower one below).
    shared.sort_by(|a, b| a.0.total_cmp(&b.0));
    let label_side: Vec<i32> = shared
        .iter()
        .enumerate()
        .map(|(k, (x, y, _))| {
            let nearest = shared
                .iter()
                .filter(|(ox, oy, _)| (ox, oy) != (x, y))
                .filter(|(ox, _, _)| (ox.log10() - x.log10()).abs() < 0.15)
                .min_by(|a, b| (a.1 - y).abs().total_cmp(&(b.1 - y).abs()));
            match nearest {
                Some((_, oy, _)) if oy > y => 6,
                Some(_) => -20,
                None if k % 2 == 0 => -20,
                None => 6,
            }
        })
        .collect();
    for (k, (x, y, members)) in shared.iter().enumerate() {
        let first = members[0];
        let c = color(first);
        // Filled: on the Pareto front; hollow: dominated.
        let style = if members.iter().any(|i| front.contains(i)) {
            c.filled()
        } else {
            c.stroke_width(2)
        };
        let label = members
            .iter()
            .map(|&i| points[i].0.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let dy = label_side[k];
        let marker = EmptyElement::at((*x, *y))
            + Circle::new((0, 0), 6, style)
            + Text::new(label, (9, dy), (FAMILY, 14).into_font().color(&BLACK));
        chart
            .draw_series(std::iter::once(marker))
            .map_err(plot_err)?;
    }
    if front.len() > 1 {
        chart
            .configure_series_labels()
            .label_font((FAMILY, 14))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(plot_err)?;
    }
    Ok(())
}

/// Labels of a log axis's ticks: only 1, 2 and 5 times a power of ten are printed (`1k`, `2k`,
/// `5k`, `10k`), so the crowded ticks just below each power (`8k 9k 10k`) stay unlabelled.
fn log_tick_label(x: f64) -> String {
    let mantissa = x / 10f64.powf(x.log10().floor());
    if [1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-6) {
        axis_count(x)
    } else {
        String::new()
    }
}

/// A count for an axis label: `500`, `1k`, `10k`, `1.5M`, `2G`.
fn axis_count(x: f64) -> String {
    let (v, unit) = if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    let text = format!("{v:.1}");
    format!("{}{unit}", text.trim_end_matches(".0"))
}

/// Grouped bars: one cluster per task, one bar per row, 95% interval (else ± std) error bars.
/// Accuracy curves of a class-incremental stream, markers at every stage.
fn curves<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    lines: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    root.fill(&WHITE).map_err(plot_err)?;
    let points = || lines.iter().flat_map(|(_, p)| p.iter());
    let x_max = points().map(|p| p.0).fold(1.0, f64::max);
    let y_min = points().map(|p| p.1).fold(100.0, f64::min);
    let y_range = ((y_min - 5.0).max(0.0) / 10.0).floor() * 10.0..100.0;
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FAMILY, 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max * 1.04, y_range)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("Classes seen")
        .y_desc("Accuracy on the classes seen (%)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(plot_err)?;
    for (i, (label, line)) in lines.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(line.iter().copied(), c.stroke_width(2)))
            .map_err(plot_err)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(line.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerLeft)
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

fn per_task<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    board: &Leaderboard,
) -> Result<()> {
    root.fill(&WHITE).map_err(plot_err)?;
    let n_tasks = board.tasks.len();
    let n_rows = board.rows.len().max(1);
    let top = board
        .rows
        .iter()
        .flat_map(|r| r.cells.iter())
        .filter_map(|c| c.ci95.map(|ci| ci.1).or(c.mean()))
        .fold(0f64, f64::max);
    // Head room above the tallest whisker for the legend.
    let y_max = ((top * 1.5 / 10.0).ceil() * 10.0).clamp(10.0, 110.0);
    let tasks = board.tasks.clone();
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FAMILY, 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.5f64..(n_tasks as f64 - 0.5), 0f64..y_max)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n_tasks + 1)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < tasks.len() {
                tasks[i as usize].clone()
            } else {
                String::new()
            }
        })
        .y_desc("Accuracy (%)")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(plot_err)?;

    let cluster = 0.8;
    let bar = cluster / n_rows as f64;
    for (ri, row) in board.rows.iter().enumerate() {
        let c = color(ri);
        let x0 = |t: usize| t as f64 - cluster / 2.0 + ri as f64 * bar;
        let bars: Vec<(usize, f64)> = row
            .cells
            .iter()
            .enumerate()
            .filter_map(|(t, cell)| cell.mean().map(|m| (t, m)))
            .collect();
        chart
            .draw_series(bars.iter().map(|&(t, m)| {
                Rectangle::new(
                    [(x0(t) + bar * 0.08, 0.0), (x0(t) + bar * 0.92, m)],
                    c.filled(),
                )
            }))
            .map_err(plot_err)?
            .label(row.label.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
        let whiskers: Vec<(f64, f64, f64, f64)> = row
            .cells
            .iter()
            .enumerate()
            .filter_map(|(t, cell)| {
                let s = cell.summary?;
                let (lo, hi) = cell
                    .ci95
                    .or_else(|| (s.n >= 2).then_some((s.mean - s.std, s.mean + s.std)))?;
                Some((x0(t) + bar / 2.0, lo, s.mean, hi))
            })
            .collect();
        chart
            .draw_series(whiskers.into_iter().map(|(x, lo, m, hi)| {
                ErrorBar::new_vertical(x, lo.max(0.0), m, hi.min(100.0), BLACK.stroke_width(1), 6)
            }))
            .map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(plot_err)?;
    Ok(())
}
