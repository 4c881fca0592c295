//! The PNG: latency by percentile per operation, throughput and p99 over time, and (with rate
//! steps) p99 against offered load. Text needs a TrueType font: the first of `--font` and the
//! usual system paths that exists (Debian: fonts-dejavu-core).

use std::path::Path;

use plotters::prelude::*;

use crate::stats::{Stats, Tick};
use crate::workload::OpKind;

/// Where fonts usually are.
const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// One rate step: offered and achieved rates, and the latency at them.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StepPoint {
    pub percent_of_peak: f64,
    pub offered: f64,
    pub achieved: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

fn register_font(explicit: Option<&Path>) -> anyhow::Result<()> {
    let path = explicit
        .map(Path::to_path_buf)
        .or_else(|| {
            FONT_PATHS
                .iter()
                .map(Path::new)
                .find(|p| p.exists())
                .map(Path::to_path_buf)
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no TrueType font for the plot's text: install fonts-dejavu-core or pass --font FILE.ttf"
            )
        })?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(&path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{} is not a TrueType font", path.display()))?;
    Ok(())
}

/// A panel over time: caption, unit, and the value of each second.
type Series = (&'static str, &'static str, fn(&Tick) -> f64);

const QUANTILES: [f64; 13] = [
    0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99995, 0.99999,
];

/// The x of a quantile on a "nines" axis: 0 -> 0, 0.9 -> 1, 0.99 -> 2, ...
fn nines(q: f64) -> f64 {
    -(1.0 - q).max(1e-6).log10()
}

fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    match x {
        x if x < 0.5 => "0".into(),
        x if x < 1.5 => format!("{p:.0}"),
        _ => format!("{p:.*}", (x.round() as usize).saturating_sub(2)),
    }
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {e}")
}

/// Draws the run's PNG at `path`.
pub fn draw(
    path: &Path,
    title: &str,
    stats: &Stats,
    timeline: &[Tick],
    steps: &[StepPoint],
    font: Option<&Path>,
) -> anyhow::Result<()> {
    register_font(font)?;
    let panels = if steps.is_empty() { 3 } else { 4 };
    let root = BitMapBackend::new(path, (1200, 380 * panels)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (head, body) = root.split_vertically(40);
    head.titled(title, ("sans-serif", 22)).map_err(err)?;
    let areas = body.split_evenly((panels as usize, 1));
    let colors = [
        &BLUE,
        &RED,
        &GREEN,
        &MAGENTA,
        &CYAN,
        &BLACK,
        &full_palette_orange(),
        &YELLOW,
    ];

    // Latency by percentile.
    let kinds: Vec<(OpKind, &crate::stats::OpStats)> = stats.ops.iter().map(|(k, s)| (*k, s)).collect();
    let top = kinds
        .iter()
        .map(|(_, s)| s.latency.max())
        .max()
        .unwrap_or(1)
        .max(10) as f64
        * 1.5;
    let mut chart = ChartBuilder::on(&areas[0])
        .caption(
            "latency by percentile (from intended send time)",
            ("sans-serif", 18),
        )
        .margin(12)
        .margin_right(40)
        .x_label_area_size(36)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..5f64, (1f64..top).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (us)")
        .x_labels(6)
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(err)?;
    for (i, (kind, s)) in kinds.iter().enumerate() {
        let color = colors[i % colors.len()].to_owned();
        let points: Vec<(f64, f64)> = QUANTILES
            .iter()
            .map(|&q| (nines(q), s.latency.value_at_quantile(q).max(1) as f64))
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(kind.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    legend(&mut chart)?;

    // Throughput, then p99, over time.
    let end = timeline.last().map_or(1.0, |t| t.t).max(1.0);
    let series: [Series; 2] = [
        ("operations per second (all kinds)", "ops/s", |t| t.per_second),
        ("p99 latency per second (us)", "p99 (us)", |t| t.p99_us as f64),
    ];
    for (area, (caption, unit, value)) in areas[1..3].iter().zip(series) {
        let max = timeline.iter().map(&value).fold(1.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..end, 0f64..max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("seconds (shaded: warm-up)")
            .y_desc(unit)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(err)?;
        if let Some(w) = timeline.iter().filter(|t| t.warmup).map(|t| t.t).reduce(f64::max) {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.0, 0.0), (w, max)],
                    BLACK.mix(0.08).filled(),
                )))
                .map_err(err)?;
        }
        chart
            .draw_series(LineSeries::new(
                timeline.iter().map(|t| (t.t, value(t))),
                BLUE.stroke_width(2),
            ))
            .map_err(err)?;
    }

    if !steps.is_empty() {
        let max_x = steps.iter().map(|s| s.percent_of_peak).fold(10.0, f64::max) * 1.05;
        let max_y = steps.iter().map(|s| s.p999_us).max().unwrap_or(1).max(10) as f64 * 1.5;
        let mut chart = ChartBuilder::on(&areas[3])
            .caption("latency against offered load (open loop)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..max_x, (1f64..max_y).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("offered load, % of the closed-loop peak")
            .y_desc("latency (us)")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(err)?;
        for (i, (label, pick)) in [
            ("p50", (|s: &StepPoint| s.p50_us) as fn(&StepPoint) -> u64),
            ("p99", |s: &StepPoint| s.p99_us),
            ("p99.9", |s: &StepPoint| s.p999_us),
        ]
        .into_iter()
        .enumerate()
        {
            let color = colors[i].to_owned();
            chart
                .draw_series(LineSeries::new(
                    steps.iter().map(|s| (s.percent_of_peak, pick(s).max(1) as f64)),
                    color.stroke_width(2),
                ))
                .map_err(err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        legend(&mut chart)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// The series' names, boxed in the upper left.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

fn full_palette_orange() -> RGBColor {
    RGBColor(255, 152, 0)
}
