//! The `--chart FILE.svg` picture: the metric, the band, and each policy's size over time.
//!
//! What this is: drawing only (plotters, SVG backend). What it is not: a source of any figure;
//! it draws what the replay recorded. Long series are thinned to at most [`MAX_POINTS`] points
//! per line (keeping each bucket's highest value, so a spike or a grow never disappears).

use std::path::{Path, PathBuf};

use plotters::prelude::*;

/// Most points drawn per line: enough for any screen, small enough for a light SVG.
pub const MAX_POINTS: usize = 3000;

#[derive(Debug, thiserror::Error)]
#[error("cannot draw the chart {}", path.display())]
pub struct ChartError {
    path: PathBuf,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// What to draw. `hours` are hours since the first sample; every line has one value per hour.
pub struct ChartData<'a> {
    pub title: String,
    /// The unit of the y axis (`vCPU`, `GiB`).
    pub unit: &'a str,
    pub hours: &'a [f64],
    /// The metric: usage in `unit`.
    pub usage: &'a [f64],
    /// `(policy, size at each sample)`, Steward first.
    pub sizes: Vec<(&'a str, &'a [f64])>,
    /// The band `[low, high]` as utilization; drawn as usage bounds around Steward's size.
    pub band: (f64, f64),
}

fn thin(hours: &[f64], values: &[f64]) -> Vec<(f64, f64)> {
    let bucket = hours.len().div_ceil(MAX_POINTS).max(1);
    hours
        .chunks(bucket)
        .zip(values.chunks(bucket))
        .map(|(h, v)| (h[0], v.iter().copied().fold(f64::MIN, f64::max)))
        .collect()
}

const COLOURS: [RGBColor; 4] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Draws the chart into `path`.
pub fn draw(path: &Path, data: &ChartData<'_>) -> Result<(), ChartError> {
    draw_inner(path, data).map_err(|source| ChartError {
        path: path.to_path_buf(),
        source,
    })
}

fn draw_inner(
    path: &Path,
    data: &ChartData<'_>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let x_max = data.hours.last().copied().unwrap_or(1.0).max(1e-3);
    let y_max = data
        .usage
        .iter()
        .chain(data.sizes.iter().flat_map(|(_, s)| s.iter()))
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.1;
    let root = SVGBackend::new(path, (1400, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&data.title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("hours")
        .y_desc(data.unit)
        .draw()?;

    let grey = RGBColor(120, 120, 120);
    chart
        .draw_series(LineSeries::new(
            thin(data.hours, data.usage),
            grey.stroke_width(1),
        ))?
        .label("usage")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
    if let Some((_, steward)) = data.sizes.first() {
        let (low, high) = data.band;
        let band_colour = RGBColor(255, 160, 122);
        for (name, factor) in [("steward band low", low), ("steward band high", high)] {
            let edge: Vec<f64> = steward.iter().map(|s| s * factor).collect();
            chart
                .draw_series(DashedLineSeries::new(
                    thin(data.hours, &edge),
                    4,
                    4,
                    band_colour.stroke_width(1),
                ))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], band_colour));
        }
    }
    for (i, (name, sizes)) in data.sizes.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                thin(data.hours, sizes),
                colour.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_the_peak_of_each_bucket() {
        let hours: Vec<f64> = (0..10_000).map(|i| i as f64).collect();
        let mut values = vec![1.0; 10_000];
        values[5_001] = 9.0;
        let points = thin(&hours, &values);
        assert!(points.len() <= MAX_POINTS);
        assert!(points.iter().any(|&(_, v)| v == 9.0));
    }

    #[test]
    fn draws_an_svg_with_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.svg");
        let hours = [0.0, 1.0, 2.0];
        let data = ChartData {
            title: "t".into(),
            unit: "vCPU",
            hours: &hours,
            usage: &[1.0, 1.5, 0.5],
            sizes: vec![("steward", &[2.0, 2.0, 2.5]), ("hpa", &[2.0, 3.0, 3.0])],
            band: (0.3, 0.8),
        };
        draw(&path, &data).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        assert!(svg.contains("hpa") && svg.contains("steward band high"));
    }

    #[test]
    fn an_unwritable_path_is_an_error() {
        let data = ChartData {
            title: "t".into(),
            unit: "vCPU",
            hours: &[0.0],
            usage: &[1.0],
            sizes: vec![],
            band: (0.3, 0.8),
        };
        let err = draw(Path::new("/nonexistent-dir/c.svg"), &data).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/c.svg"));
    }
}
