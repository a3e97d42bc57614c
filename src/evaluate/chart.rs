//! The `--chart FILE.svg` picture: the metric, the band, and each policy's size over time; and
//! the `--plane FILE.svg` picture: every policy as one point on the plane of cost
//! (resource-hours, x) against time under-provisioned (minutes above `high`, y), sized by its
//! changes, for the sum of the traces and for each trace.
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
    /// The band `[low, high]` as utilization; drawn on the utilization plot (usage over the first
    /// policy's size, Steward's).
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

const COLOURS: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
];
const USAGE_COLOUR: RGBColor = RGBColor(120, 120, 120);
const BAND_COLOUR: RGBColor = RGBColor(255, 160, 122);

/// The picture's size, and where the plots end and the legend (outside them, on the right) begins.
const WIDTH: u32 = 1400;
const HEIGHT: u32 = 760;
pub const LEGEND_X: u32 = 1160;
/// The upper plot's share of the height (sizes and usage); the lower one shows utilization.
const UPPER_HEIGHT: u32 = 470;

/// Draws the chart into `path`: above, usage and every policy's size (in `unit`); below,
/// Steward's utilization (usage over Steward's size) against its band `[low, high]`, which is
/// what the band limits. The legend stands to the right of both, never over the data.
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
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(&data.title, ("sans-serif", 20))?;
    let (plots, legend) = root.split_horizontally(LEGEND_X);
    let (upper, lower) = plots.split_vertically(UPPER_HEIGHT);

    let mut sizes = ChartBuilder::on(&upper)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    sizes
        .configure_mesh()
        .y_desc(format!("usage and size ({})", data.unit))
        .draw()?;
    sizes.draw_series(LineSeries::new(
        thin(data.hours, data.usage),
        USAGE_COLOUR.stroke_width(1),
    ))?;
    let mut entries = vec![(format!("usage ({})", data.unit), USAGE_COLOUR, 1)];
    for (i, (name, policy_sizes)) in data.sizes.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        sizes.draw_series(LineSeries::new(
            thin(data.hours, policy_sizes),
            colour.stroke_width(2),
        ))?;
        entries.push((format!("{name} size ({})", data.unit), colour, 2));
    }

    // Utilization under Steward's size: the figure the band [low, high] is about.
    let (low, high) = data.band;
    if let Some((name, steward)) = data.sizes.first() {
        let utilization: Vec<f64> = data
            .usage
            .iter()
            .zip(steward.iter())
            .map(|(u, s)| if *s > 0.0 { u / s } else { 0.0 })
            .collect();
        let u_max = utilization
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(high, f64::max)
            * 1.1;
        let mut util = ChartBuilder::on(&lower)
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max, 0f64..u_max)?;
        util.configure_mesh()
            .x_desc("hours")
            .y_desc(format!("utilization of {name}'s size"))
            .draw()?;
        util.draw_series(std::iter::once(Rectangle::new(
            [(0.0, low), (x_max, high)],
            BAND_COLOUR.mix(0.25).filled(),
        )))?;
        for edge in [low, high] {
            util.draw_series(DashedLineSeries::new(
                [(0.0, edge), (x_max, edge)],
                4,
                4,
                BAND_COLOUR.stroke_width(1),
            ))?;
        }
        util.draw_series(LineSeries::new(
            thin(data.hours, &utilization),
            COLOURS[0].stroke_width(1),
        ))?;
        entries.push((format!("{name} utilization (below)"), COLOURS[0], 1));
        entries.push((
            format!("band [{low:.2}, {high:.2}] (below)"),
            BAND_COLOUR,
            6,
        ));
    }

    // The legend, in its own area to the right of the plots.
    for (i, (label, colour, width)) in entries.iter().enumerate() {
        let y = 40 + 24 * i as i32;
        legend.draw(&PathElement::new(
            vec![(10, y), (40, y)],
            colour.stroke_width(*width),
        ))?;
        legend.draw(&Text::new(
            label.clone(),
            (48, y - 7),
            ("sans-serif", 14).into_font(),
        ))?;
    }
    root.present()?;
    Ok(())
}

/// One panel of the plane: each policy's point for one trace, or for the sum of them.
pub struct PlanePanel<'a> {
    pub title: String,
    /// The x axis: `vCPU-hours`, `GiB-hours`, `member-hours`.
    pub hours_unit: &'a str,
    /// `(policy, resource-hours, minutes above high, changes)`, in the same policy order in
    /// every panel (a policy keeps its colour).
    pub points: Vec<(&'a str, f64, f64, u64)>,
}

/// Panels per row of the plane, and each panel's height.
const PLANE_COLUMNS: usize = 3;
const PANEL_HEIGHT: u32 = 330;
/// The largest point's radius (the panel's most changes); the smallest is [`MIN_RADIUS`].
const MAX_RADIUS: f64 = 18.0;
const MIN_RADIUS: f64 = 3.0;

/// A point's radius: its area grows with its changes, relative to the panel's most.
fn radius(changes: u64, most: u64) -> i32 {
    let share = if most == 0 {
        0.0
    } else {
        (changes as f64 / most as f64).sqrt()
    };
    (MIN_RADIUS + (MAX_RADIUS - MIN_RADIUS) * share).round() as i32
}

/// Draws the plane into `path`: one panel per entry of `panels` (the sum first, then each
/// trace), three to a row, each policy one point, the legend to the right.
pub fn draw_plane(path: &Path, title: &str, panels: &[PlanePanel<'_>]) -> Result<(), ChartError> {
    draw_plane_inner(path, title, panels).map_err(|source| ChartError {
        path: path.to_path_buf(),
        source,
    })
}

fn draw_plane_inner(
    path: &Path,
    title: &str,
    panels: &[PlanePanel<'_>],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let rows = panels.len().div_ceil(PLANE_COLUMNS).max(1);
    let height = 40 + PANEL_HEIGHT * rows as u32;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let (plots, legend) = root.split_horizontally(LEGEND_X);
    let areas = plots.split_evenly((rows, PLANE_COLUMNS));
    for (panel, area) in panels.iter().zip(areas.iter()) {
        let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
        let xs = panel.points.iter().map(|p| finite(p.1));
        let (x_min, x_max) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
        let (x_min, x_max) = if x_min > x_max {
            (0.0, 1.0)
        } else {
            (x_min, x_max)
        };
        // Pad by a tenth of the spread, and at least 5 % of the largest value.
        let pad = ((x_max - x_min) * 0.1).max(x_max.abs() * 0.05).max(1e-3);
        let y_max = panel.points.iter().map(|p| finite(p.2)).fold(0.0, f64::max);
        let y_max = y_max * 1.15 + 1.0;
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 14))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d((x_min - pad)..(x_max + pad), 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_desc(panel.hours_unit)
            .y_desc("minutes above high")
            .x_labels(4)
            .y_labels(5)
            .label_style(("sans-serif", 11))
            .draw()?;
        let most = panel.points.iter().map(|p| p.3).max().unwrap_or(0);
        for (i, &(name, x, y, changes)) in panel.points.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let r = radius(changes, most);
            // The label beside the point, not over it.
            let point = EmptyElement::at((finite(x), finite(y)))
                + Circle::new((0, 0), r, colour.mix(0.55).filled())
                + Text::new(
                    format!("{name} ({changes})"),
                    (r + 3, -6),
                    ("sans-serif", 11).into_font(),
                );
            chart.draw_series(std::iter::once(point))?;
        }
    }
    // The legend: a colour per policy (the first panel's order), and what the size means.
    let mut y = 40;
    if let Some(first) = panels.first() {
        for (i, (name, ..)) in first.points.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            legend.draw(&Circle::new((25, y), 7, colour.mix(0.55).filled()))?;
            legend.draw(&Text::new(
                name.to_string(),
                (48, y - 7),
                ("sans-serif", 14).into_font(),
            ))?;
            y += 24;
        }
    }
    for line in [
        "point area = changes",
        "(relative to the panel's most;",
        "the label says how many)",
        "lower left is better:",
        "fewer resource-hours,",
        "fewer minutes above high",
    ] {
        y += 20;
        legend.draw(&Text::new(line, (10, y), ("sans-serif", 13).into_font()))?;
    }
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
        assert!(svg.contains("hpa size") && svg.contains("band [0.30, 0.80]"));
    }

    /// The legend stands right of the plots: every data line ends left of [`LEGEND_X`], every
    /// legend label starts right of it.
    #[test]
    fn the_legend_never_covers_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.svg");
        let hours: Vec<f64> = (0..200).map(f64::from).collect();
        let usage: Vec<f64> = hours.iter().map(|h| 1.0 + (h / 10.0).sin()).collect();
        let steward = vec![2.5; 200];
        let hpa = vec![3.0; 200];
        let data = ChartData {
            title: "t".into(),
            unit: "vCPU",
            hours: &hours,
            usage: &usage,
            sizes: vec![("steward", &steward), ("hpa", &hpa)],
            band: (0.5, 0.8),
        };
        draw(&path, &data).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let attr = |element: &str, name: &str| -> Option<String> {
            let at = element.find(&format!(" {name}=\""))? + name.len() + 3;
            Some(element[at..].split('"').next()?.to_string())
        };
        let mut data_lines = 0;
        for element in svg.split('<').filter(|e| e.starts_with("polyline")) {
            let points = attr(element, "points").unwrap();
            let xs: Vec<f64> = points
                .split_whitespace()
                .map(|p| p.split(',').next().unwrap().parse().unwrap())
                .collect();
            if xs.len() > 10 {
                data_lines += 1;
                let right = xs.iter().copied().fold(f64::MIN, f64::max);
                assert!(right < f64::from(LEGEND_X), "a data line reaches x {right}");
            }
        }
        assert!(
            data_lines >= 4,
            "usage, two sizes and utilization: {data_lines}"
        );
        let mut labels = 0;
        for element in svg.split('<').filter(|e| e.starts_with("text")) {
            let text = element.split(">").nth(1).unwrap_or_default().trim();
            let legend_label = ["usage (vCPU)", "steward size (vCPU)", "hpa size (vCPU)"]
                .contains(&text)
                || text.starts_with("band [");
            if legend_label {
                labels += 1;
                let x: f64 = attr(element, "x").unwrap().parse().unwrap();
                assert!(x > f64::from(LEGEND_X), "the label {text:?} is at x {x}");
            }
        }
        assert_eq!(labels, 4, "usage, steward, hpa and the band are labelled");
    }

    #[test]
    fn the_plane_puts_every_policy_on_every_panel_sized_by_its_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plane.svg");
        let panel = |title: &str| PlanePanel {
            title: title.into(),
            hours_unit: "vCPU-hours",
            points: vec![
                ("steward", 500.0, 170.0, 67),
                ("hpa", 484.0, 130.0, 151),
                ("fixed", 460.0, 40.0, 1),
            ],
        };
        draw_plane(
            &path,
            "scorecard",
            &[panel("sum"), panel("a"), panel("b"), panel("c")],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        for label in [
            "steward (67)",
            "hpa (151)",
            "fixed (1)",
            "point area = changes",
        ] {
            assert!(svg.contains(label), "{label}");
        }
        // Three points per panel, four panels, and three legend dots.
        assert_eq!(svg.matches("<circle").count(), 3 * 4 + 3);
        // The most changes draw the largest point, the fewest the smallest.
        assert_eq!(radius(151, 151), MAX_RADIUS as i32);
        assert_eq!(radius(0, 151), MIN_RADIUS as i32);
        assert!(radius(67, 151) < radius(151, 151));
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
