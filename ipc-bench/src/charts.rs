//! SVG charts of a run: latency by size, a latency CDF, throughput by size.

use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;

use crate::results::{fmt_size, Run};

const W: u32 = 960;
const H: u32 = 600;

fn colour(i: usize) -> RGBColor {
    // 20 distinguishable colours (the "tab20" order: dark, then light, per hue).
    const P: [RGBColor; 20] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
        RGBColor(0, 0, 0),
        RGBColor(174, 199, 232),
        RGBColor(255, 187, 120),
        RGBColor(152, 223, 138),
        RGBColor(255, 152, 150),
        RGBColor(197, 176, 213),
        RGBColor(196, 156, 148),
        RGBColor(247, 182, 210),
        RGBColor(219, 219, 141),
        RGBColor(158, 218, 229),
    ];
    P[i % P.len()]
}

/// A value in microseconds as a short label.
fn us_label(v: &f64) -> String {
    crate::results::fmt_ns(v * 1000.0)
}

type Series = (String, Vec<(f64, f64)>);

fn bounds(series: &[Series], f: impl Fn(&(f64, f64)) -> f64) -> (f64, f64) {
    let v = series.iter().flat_map(|s| s.1.iter().map(&f));
    let (lo, hi) = v.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    if lo > hi {
        (1.0, 10.0)
    } else {
        (lo, hi)
    }
}

/// Plots lines on log-log axes.
fn plot(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    x_fmt: &dyn Fn(&f64) -> String,
    y_fmt: &dyn Fn(&f64) -> String,
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (x0, x1) = bounds(series, |p| p.0);
    let (y0, y1) = bounds(series, |p| p.1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d((x0 - 0.5)..(x1 + 0.5), (y0 * 0.8..y1 * 1.25).log_scale())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(((x1 - x0) as usize + 2).min(24))
        .x_label_formatter(x_fmt)
        .y_label_formatter(y_fmt)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = colour(i);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("write {}", path.display()))
}

fn log2(size: usize) -> f64 {
    (size.max(1) as f64).log2()
}

/// Labels whole powers of two on a log2(size) axis.
fn size_label(x: &f64) -> String {
    let r = x.round();
    if (x - r).abs() < 1e-6 && (0.0..=40.0).contains(&r) {
        fmt_size(1usize << (r as u32))
    } else {
        String::new()
    }
}

/// Writes the charts into `dir`; returns `(file name, title)` of each written.
pub fn write(run: &Run, dir: &Path) -> anyhow::Result<Vec<(&'static str, &'static str)>> {
    let mut written = Vec::new();
    let us = |ns: u64| ns as f64 / 1000.0;

    let by_size: Vec<Series> = run
        .mechanisms
        .iter()
        .map(|m| {
            let pts = m
                .latency
                .iter()
                .filter_map(|r| r.dist.as_ref().map(|d| (log2(r.size), us(d.p50_ns))))
                .collect();
            (m.name.clone(), pts)
        })
        .filter(|s: &Series| !s.1.is_empty())
        .collect();
    if !by_size.is_empty() {
        let file = "latency-by-size.svg";
        let title = "Round-trip latency (p50) by message size";
        plot(
            &dir.join(file),
            title,
            "message size",
            "p50 round trip",
            &by_size,
            &size_label,
            &us_label,
        )?;
        written.push((file, title));
    }

    let size = run.settings.sizes.iter().copied().min().unwrap_or(64);
    let cdf: Vec<Series> = run
        .mechanisms
        .iter()
        .filter_map(|m| {
            let d = m.latency.iter().find(|r| r.size == size)?.dist.as_ref()?;
            // Percentile on a log axis of 1/(1-p), so the tail gets room.
            let pts = d
                .cdf
                .iter()
                .filter(|p| p[0] < 100.0)
                .map(|p| (us(p[1] as u64).max(0.001), 100.0 / (100.0 - p[0])))
                .collect();
            Some((m.name.clone(), pts))
        })
        .collect();
    if !cdf.is_empty() {
        let file = "latency-cdf.svg";
        let title = "Round-trip latency distribution, smallest message";
        let path = dir.join(file);
        let root = SVGBackend::new(&path, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (x0, x1) = bounds(&cdf, |p| p.0);
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Round-trip latency percentiles, {}", fmt_size(size)),
                ("sans-serif", 22),
            )
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (x0 * 0.8..x1 * 1.25).log_scale(),
                (1.0..10_000.0).log_scale(),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("round trip")
            .y_desc("percentile")
            .x_label_formatter(&us_label)
            .y_label_formatter(&|y| format!("{:.2}%", 100.0 - 100.0 / y))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (i, (name, pts)) in cdf.iter().enumerate() {
            let c = colour(i);
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
        written.push((file, title));
    }

    let tput: Vec<Series> = run
        .mechanisms
        .iter()
        .map(|m| {
            let pts = m
                .throughput
                .iter()
                .filter_map(|r| r.gb_per_s.map(|g| (log2(r.size), g)))
                .collect();
            (m.name.clone(), pts)
        })
        .filter(|s: &Series| !s.1.is_empty())
        .collect();
    if !tput.is_empty() {
        let file = "throughput-by-size.svg";
        let title = "One-way stream throughput by message size";
        plot(
            &dir.join(file),
            title,
            "message size",
            "GB/s",
            &tput,
            &size_label,
            &|v| format!("{v}"),
        )?;
        written.push((file, title));
    }
    Ok(written)
}
