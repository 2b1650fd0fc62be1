//! PNG plots of the report (plotters, bitmap backend; text drawn with DejaVu Sans
//! through ab_glyph, from Debian's fonts-dejavu-core, which `cargo xtask setup`
//! installs).

use std::path::Path;

use anyhow::{Context as _, Result, anyhow};
use plotters::{coord::ranged1d::SegmentValue, prelude::*};

use super::Dist;

/// Where Debian's fonts-dejavu-core puts the font.
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const FAMILY: &str = "sans-serif";

/// Registers the font once (plotters wants `'static` bytes: the file is read once and
/// kept for the life of the process).
pub fn init_font() -> Result<()> {
    static DONE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let bytes = std::fs::read(FONT).map_err(|e| {
            format!("{FONT}: {e} (install the Debian package fonts-dejavu-core: cargo xtask setup)")
        })?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
            .map_err(|_| format!("{FONT} is not a usable TrueType font"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e:?}")
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// One bar of a horizontal bar chart.
pub struct Bar {
    pub label: String,
    pub value: Dist,
    /// Index into the palette.
    pub color: usize,
}

/// A vertical reference line (a target).
pub struct Mark {
    pub x: f64,
    pub label: String,
}

/// Horizontal bars (median) with p10..p90 whiskers, one row per bar.
pub fn hbars<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_desc: &str,
    bars: &[Bar],
    marks: &[Mark],
) -> Result<()> {
    // n rows: bars span Exact(i)..Exact(i + 1) of a segmented axis over 0..=n - 1.
    let n = bars.len().max(1) as i32;
    let lo = bars
        .iter()
        .map(|b| b.value.p10.min(b.value.median))
        .fold(0.0f64, f64::min);
    let hi = bars
        .iter()
        .map(|b| b.value.p90.max(b.value.median))
        .chain(marks.iter().map(|m| m.x))
        .fold(1.0f64, f64::max);
    let pad = (hi - lo) * 0.08;
    let label_width = bars.iter().map(|b| b.label.len()).max().unwrap_or(10) as u32 * 8 + 20;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(label_width.min(360))
        .build_cartesian_2d(
            (lo - if lo < 0.0 { pad } else { 0.0 })..(hi + pad),
            (0..n - 1).into_segmented(),
        )
        .map_err(err)?;
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    let fmt = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(bars.len())
        .y_label_formatter(&fmt)
        .x_desc(x_desc)
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 14))
        .draw()
        .map_err(err)?;
    for (i, b) in bars.iter().enumerate() {
        let i = i as i32;
        let c = COLORS[b.color % COLORS.len()];
        let mut r = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (b.value.median, SegmentValue::Exact(i + 1)),
            ],
            c.mix(0.75).filled(),
        );
        r.set_margin(4, 4, 0, 0);
        chart.draw_series(std::iter::once(r)).map_err(err)?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![
                    (b.value.p10, SegmentValue::CenterOf(i)),
                    (b.value.p90, SegmentValue::CenterOf(i)),
                ],
                BLACK.stroke_width(2),
            )))
            .map_err(err)?;
    }
    for m in marks {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(m.x, SegmentValue::Exact(0)), (m.x, SegmentValue::Exact(n))],
                RED.stroke_width(2),
            )))
            .map_err(err)?
            .label(m.label.clone())
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    }
    if !marks.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 13))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// Lines over categories (x labels), one per series; y from 0.
pub fn lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    xlabels: &[String],
    series: &[(String, Vec<f64>)],
    marks: &[(f64, String)],
) -> Result<()> {
    let n = xlabels.len().max(1) as i32;
    let hi = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .chain(marks.iter().map(|m| m.0))
        .fold(1.0f64, f64::max)
        * 1.15;
    let lo = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .fold(0.0f64, f64::min);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((0..n - 1).into_segmented(), lo * 1.15..hi)
        .map_err(err)?;
    let fmt = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) => xlabels.get(*i as usize).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(xlabels.len())
        .x_label_formatter(&fmt)
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 14))
        .draw()
        .map_err(err)?;
    for (k, (name, ys)) in series.iter().enumerate() {
        let c = COLORS[k % COLORS.len()];
        let pts: Vec<(SegmentValue<i32>, f64)> = ys
            .iter()
            .enumerate()
            .map(|(i, y)| (SegmentValue::CenterOf(i as i32), *y))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled())))
            .map_err(err)?;
    }
    for (y, label) in marks {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(SegmentValue::Exact(0), *y), (SegmentValue::Exact(n), *y)],
                RED.stroke_width(1),
            )))
            .map_err(err)?
            .label(label.clone())
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(1)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 12))
        .draw()
        .map_err(err)?;
    Ok(())
}

/// A PNG of `w` x `h` pixels drawn by `draw`, saved to `path`.
pub fn png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    init_font()?;
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    draw(&root)?;
    root.present()
        .map_err(err)
        .with_context(|| format!("writing {}", path.display()))
}
