//! PNG plots of the runs' time series (plotters, bitmap backend). Text is drawn with a system
//! TrueType font through ab_glyph (Debian `fonts-dejavu-core`), so no fontconfig is needed.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::report::RunResult;
use crate::scenario::RunKind;

/// Where the font is looked for (override with `HUNTGATE_DEMO_FONT`).
const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

const SIZE: (u32, u32) = (1100, 480);

static FONT: OnceLock<Result<(), String>> = OnceLock::new();

/// Registers the font once (plotters needs `'static` bytes: read once, kept for the process).
fn register_font() -> anyhow::Result<()> {
    let result = FONT.get_or_init(|| {
        let candidates: Vec<String> = std::env::var("HUNTGATE_DEMO_FONT")
            .into_iter()
            .chain(FONT_PATHS.iter().map(|p| p.to_string()))
            .collect();
        let path = candidates
            .iter()
            .find(|p| Path::new(p).exists())
            .ok_or_else(|| {
                format!(
                    "no TrueType font at {} (install fonts-dejavu-core or set HUNTGATE_DEMO_FONT)",
                    FONT_PATHS.join(" or ")
                )
            })?;
        let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{path}: not a usable font"))
    });
    result.clone().map_err(anyhow::Error::msg)
}

fn color(kind: RunKind) -> RGBColor {
    match kind {
        RunKind::Legacy => RGBColor(230, 140, 20),
        RunKind::Open => RGBColor(210, 40, 40),
        RunKind::Huntgate => RGBColor(30, 150, 70),
    }
}

fn lighter(c: RGBColor) -> RGBColor {
    let mix = |v: u8| ((u16::from(v) + 2 * 200) / 3) as u8;
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

/// One line of a chart.
struct Line {
    label: String,
    color: RGBColor,
    width: u32,
    points: Vec<(f64, f64)>,
}

fn chart(
    path: &Path,
    title: &str,
    y_label: &str,
    lines: &[Line],
    guides: &[(f64, &str)],
) -> anyhow::Result<()> {
    let x_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(1.0_f64, f64::max);
    let y_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .chain(guides.iter().map(|g| g.0))
        .fold(1.0_f64, f64::max)
        * 1.08;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut c = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    c.configure_mesh()
        .x_desc("seconds since the spike started")
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (y, label) in guides {
        let style = ShapeStyle::from(&RGBColor(120, 120, 120)).stroke_width(1);
        c.draw_series(LineSeries::new([(0.0, *y), (x_max, *y)], style))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
    }
    for line in lines {
        let style = ShapeStyle::from(&line.color).stroke_width(line.width);
        c.draw_series(LineSeries::new(line.points.iter().copied(), style))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(line.label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn series(run: &RunResult, f: impl Fn(&crate::stats::Sample) -> Option<f64>) -> Vec<(f64, f64)> {
    run.samples
        .iter()
        .filter_map(|s| f(s).map(|v| (s.t_s, v)))
        .collect()
}

/// Writes the four plots into `dir`; returns `(file, caption)` for the report.
pub fn write_all(
    dir: &Path,
    runs: &[RunResult],
) -> anyhow::Result<Vec<(&'static str, &'static str)>> {
    register_font()?;
    let per_run = |f: &dyn Fn(&crate::stats::Sample) -> Option<f64>| -> Vec<Line> {
        runs.iter()
            .map(|r| Line {
                label: r.kind.title().to_string(),
                color: color(r.kind),
                width: 2,
                points: series(r, f),
            })
            .collect()
    };
    let mut plots = Vec::new();

    chart(
        &dir.join("redis-memory.png"),
        "Redis memory (used_memory / maxmemory)",
        "% of maxmemory",
        &per_run(&|s| s.redis_pct),
        &[(80.0, "80 % (governor threshold)"), (95.0, "95 %")],
    )?;
    plots.push(("redis-memory.png", "Redis memory over time"));

    chart(
        &dir.join("kafka-lag.png"),
        "Kafka consumer lag (hunt-001-scorers)",
        "messages",
        &per_run(&|s| s.kafka_lag.map(|l| l as f64)),
        &[(1000.0, "1000 (governor threshold)")],
    )?;
    plots.push(("kafka-lag.png", "Kafka consumer lag over time"));

    let mut hunters = per_run(&|s| Some(s.playing as f64));
    for r in runs {
        if r.samples.iter().any(|s| s.limit.is_some()) {
            hunters.push(Line {
                label: format!("limit {}", r.kind.title()),
                color: lighter(color(r.kind)),
                width: 1,
                points: series(r, |s| s.limit.map(|l| l as f64)),
            });
        }
    }
    chart(
        &dir.join("hunters.png"),
        "Hunters playing (thick) and the limit (thin)",
        "hunters",
        &hunters,
        &[],
    )?;
    plots.push(("hunters.png", "Hunters playing and the limit over time"));

    let mut rejections = per_run(&|s| Some(s.delta.joins_rejected as f64));
    for l in &mut rejections {
        l.label = format!("rejected joins/s {}", l.label);
    }
    for r in runs {
        rejections.push(Line {
            label: format!("freezes/s {}", r.kind.title()),
            color: color(r.kind),
            width: 4,
            points: series(r, |s| Some(s.delta.freezes as f64)),
        });
    }
    for l in &mut rejections {
        if l.width == 2 {
            l.width = 1;
        }
    }
    chart(
        &dir.join("rejections.png"),
        "Rejections per second: joins (thin) and freezes of admitted hunters (thick)",
        "requests per second",
        &rejections,
        &[],
    )?;
    plots.push(("rejections.png", "Rejected joins and freezes per second"));
    Ok(plots)
}
