//! PNG charts next to docs/benchmarks.md (plotters, bitmap backend, the
//! DejaVu Sans font from the system).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Font file used for all text.
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers the font; false when it is missing (charts are then skipped).
pub fn init_font() -> bool {
    let Ok(bytes) = std::fs::read(FONT) else {
        return false;
    };
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
}

/// Colour of a bar that meets its target.
pub const GOOD: RGBColor = RGBColor(46, 139, 87);
/// Colour of a bar that misses its target.
pub const BAD: RGBColor = RGBColor(205, 60, 50);
/// Colour of a bar without a target.
pub const NEUTRAL: RGBColor = RGBColor(90, 110, 160);
/// Baseline colour.
pub const GREY: RGBColor = RGBColor(160, 160, 160);
/// Third series colour.
pub const AMBER: RGBColor = RGBColor(220, 150, 40);

/// One horizontal bar.
pub struct Bar {
    /// Label left of the bar.
    pub label: String,
    /// Length.
    pub value: f64,
    /// Target marker (a vertical tick across the bar's row).
    pub target: Option<f64>,
    /// Fill.
    pub color: RGBColor,
    /// Text right of the bar.
    pub text: String,
}

/// A horizontal bar chart; `log` uses a log10 x axis from `x_min`.
pub fn hbars(
    path: &Path,
    title: &str,
    x_desc: &str,
    bars: &[Bar],
    x_range: (f64, f64),
    log: bool,
    legend: &[(&str, RGBColor)],
) -> Result<(), String> {
    let n = bars.len().max(1);
    let height = 110 + 30 * n as u32 + if legend.is_empty() { 0 } else { 30 };
    let root = BitMapBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (x0, x1) = x_range;
    let label_w = 330;
    let mut cb = ChartBuilder::on(&root);
    cb.caption(title, ("sans-serif", 22))
        .margin(12)
        .margin_right(120)
        .x_label_area_size(40)
        .y_label_area_size(label_w);
    if !legend.is_empty() {
        cb.margin_bottom(40);
    }
    let y_range = -0.5f64..(n as f64 - 0.5);
    let row = |i: usize| (n - 1 - i) as f64;
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(0)
                .x_desc(x_desc)
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(|e| e.to_string())?;
            for (i, b) in bars.iter().enumerate() {
                let y = row(i);
                let v = b.value.max(x0).min(x1);
                if b.value.is_finite() {
                    chart
                        .draw_series(std::iter::once(Rectangle::new(
                            [(x0, y - 0.32), (v, y + 0.32)],
                            b.color.filled(),
                        )))
                        .map_err(|e| e.to_string())?;
                }
                if let Some(t) = b.target {
                    chart
                        .draw_series(std::iter::once(PathElement::new(
                            vec![(t, y - 0.48), (t, y + 0.48)],
                            BLACK.stroke_width(3),
                        )))
                        .map_err(|e| e.to_string())?;
                }
                let (px, py) = chart.backend_coord(&(x0, y));
                root.draw(&Text::new(
                    b.label.clone(),
                    (px - 8, py),
                    ("sans-serif", 14)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Right, VPos::Center)),
                ))
                .map_err(|e| e.to_string())?;
                let (vx, vy) = chart.backend_coord(&(if b.value.is_finite() { v } else { x0 }, y));
                let tx = match b.target {
                    Some(t) => vx.max(chart.backend_coord(&(t.min(x1), y)).0),
                    None => vx,
                };
                root.draw(&Text::new(
                    b.text.clone(),
                    (tx + 6, vy),
                    ("sans-serif", 13)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Left, VPos::Center)),
                ))
                .map_err(|e| e.to_string())?;
            }
        }};
    }
    if log {
        draw!(cb
            .build_cartesian_2d((x0..x1).log_scale(), y_range)
            .map_err(|e| e.to_string())?);
    } else {
        draw!(cb
            .build_cartesian_2d(x0..x1, y_range)
            .map_err(|e| e.to_string())?);
    }
    // Legend along the bottom.
    let mut x = label_w;
    let y = height as i32 - 22;
    for (name, color) in legend {
        root.draw(&Rectangle::new(
            [(x, y - 7), (x + 14, y + 7)],
            color.filled(),
        ))
        .map_err(|e| e.to_string())?;
        root.draw(&Text::new(
            name.to_string(),
            (x + 20, y),
            ("sans-serif", 14)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(|e| e.to_string())?;
        x += 40 + 8 * name.len() as i32;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
