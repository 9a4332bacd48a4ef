//! The SVG chart of a bench report (plotters): on top, latency percentiles per
//! strategy on a log scale; below, one panel per strategy with the requests
//! per second each backend received over the run.

use std::path::Path;

use plotters::prelude::*;

use super::BenchReport;

const WIDTH: u32 = 1100;
const TOP: u32 = 380;
const PANEL: u32 = 230;

type ChartResult = Result<(), Box<dyn std::error::Error>>;

/// Writes the chart of `report` to `path`.
pub fn write_svg(report: &BenchReport, path: &Path) -> ChartResult {
    let rows = report.results.len().div_ceil(2) as u32;
    let root = SVGBackend::new(path, (WIDTH, TOP + rows * PANEL)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(TOP);
    percentiles(report, &top)?;
    let panels = bottom.split_evenly((rows as usize, 2));
    for (result, area) in report.results.iter().zip(panels.iter()) {
        // Whole seconds only: the counters' last slot holds the tail of the run.
        let seconds = (report.duration_s as usize).max(2);
        let peak = result
            .per_second
            .iter()
            .flat_map(|(_, s)| s.iter().copied())
            .max()
            .unwrap_or(1)
            .max(1);
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{}: requests/s per backend", result.strategy),
                ("sans-serif", 15),
            )
            .margin(8)
            .x_label_area_size(25)
            .y_label_area_size(45)
            .build_cartesian_2d(0usize..seconds - 1, 0u64..peak + peak / 10 + 1)?;
        chart
            .configure_mesh()
            .x_desc("second")
            .light_line_style(WHITE)
            .draw()?;
        for (index, (name, counts)) in result.per_second.iter().enumerate() {
            let color = Palette99::pick(index).to_rgba();
            let points = counts.iter().take(seconds).copied().enumerate();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn percentiles(
    report: &BenchReport,
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
) -> ChartResult {
    let values = |r: &super::StrategyResult| [r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms];
    let all: Vec<f64> = report
        .results
        .iter()
        .flat_map(values)
        .filter(|v| *v > 0.0)
        .collect();
    let low = all.iter().copied().fold(f64::INFINITY, f64::min).max(0.01) / 1.5;
    let high = all.iter().copied().fold(0.0, f64::max).max(low * 2.0) * 1.5;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "latency percentiles per strategy ({}, seed {})",
                report.load, report.seed
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.2f64..3.6f64, (low..high).log_scale())?;
    const LABELS: [&str; 4] = ["p50", "p90", "p99", "p99.9"];
    chart
        .configure_mesh()
        .x_labels(4)
        .x_label_formatter(&|x| {
            let index = x.round();
            if (x - index).abs() < 0.01 && (0.0..4.0).contains(&index) {
                LABELS[index as usize].to_string()
            } else {
                String::new()
            }
        })
        .y_desc("latency (ms, log scale)")
        .light_line_style(WHITE)
        .draw()?;
    for (index, result) in report.results.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        let points: Vec<(f64, f64)> = values(result)
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64, v.max(low)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(result.strategy.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    Ok(())
}
