//! The latency plot, written as a small SVG by hand: three lines against concurrent streams
//! on two labelled axes. A plotting crate would add a dependency tree (and its text layout
//! needs a font stack) for what is a few dozen elements; this stays a pure, tested function.

use std::fmt::Write;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
/// Plot area margins: left, right, top, bottom (room for tick labels and the legend).
const MARGIN: [f64; 4] = [64.0, 180.0, 48.0, 56.0];
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// One line: a legend name and (streams, seconds) points; missing values are skipped.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, Option<f64>)>,
}

/// A step of 1, 2 or 5 × 10^k giving about five ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    let raw = (max / 5.0).max(1e-9);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The SVG document: `title` on top, x = concurrent streams, y = seconds.
pub fn plot(title: &str, series: &[Series]) -> String {
    let [left, right, top, bottom] = MARGIN;
    let (w, h) = (WIDTH - left - right, HEIGHT - top - bottom);
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let x_max = xs.fold(1.0, f64::max);
    let ys = series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1));
    let y_top = ys.fold(0.1, f64::max);
    let y_step = tick_step(y_top);
    let y_max = y_step * (y_top / y_step).ceil();
    let px = |x: f64| left + w * x / x_max;
    let py = |y: f64| top + h * (1.0 - y / y_max);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(
        svg,
        r#"<text x="{left}" y="24" font-size="14">{}</text>"#,
        escape(title)
    );
    // Grid and y ticks.
    let mut y = 0.0;
    while y <= y_max + 1e-9 {
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{x2:.1}" y1="{gy:.1}" y2="{gy:.1}" stroke="#ddd"/><text x="{tx:.1}" y="{ty:.1}" text-anchor="end">{y}</text>"##,
            x2 = left + w,
            gy = py(y),
            tx = left - 6.0,
            ty = py(y) + 4.0
        );
        y = ((y + y_step) / y_step).round() * y_step;
    }
    // X ticks at the measured levels.
    let mut levels: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    levels.sort_by(f64::total_cmp);
    levels.dedup();
    for x in &levels {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{x}</text>"#,
            px(*x),
            top + h + 18.0
        );
    }
    let _ = write!(
        svg,
        r#"<path d="M{left} {top}V{:.1}H{:.1}" fill="none" stroke="black"/><text x="{:.1}" y="{:.1}" text-anchor="middle">concurrent real-time streams</text><text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">seconds</text>"#,
        top + h,
        left + w,
        left + w / 2.0,
        HEIGHT - 14.0,
        top + h / 2.0
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = s
            .points
            .iter()
            .filter_map(|(x, y)| y.map(|y| format!("{:.1},{:.1}", px(*x), py(y))))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            points.join(" ")
        );
        for p in &points {
            let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(
                svg,
                r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{colour}"/>"#
            );
        }
        let ly = top + 10.0 + 20.0 * i as f64;
        let _ = write!(
            svg,
            r#"<line x1="{0:.1}" x2="{1:.1}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"/><text x="{2:.1}" y="{3:.1}">{4}</text>"#,
            left + w + 16.0,
            left + w + 40.0,
            left + w + 46.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(3.4), 1.0);
        assert_eq!(tick_step(6.6), 2.0);
        assert_eq!(tick_step(0.7), 0.2);
        assert_eq!(tick_step(40.0), 10.0);
    }

    #[test]
    fn plot_has_every_point_and_legend() {
        let series = [
            Series {
                name: "final p50".into(),
                points: vec![(1.0, Some(0.5)), (2.0, Some(0.8)), (4.0, None)],
            },
            Series {
                name: "lag <p95>".into(),
                points: vec![(1.0, Some(3.0))],
            },
        ];
        let svg = plot("bench & co", &series);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(
            svg.matches("<circle").count(),
            3,
            "missing values are skipped"
        );
        assert!(svg.contains("bench &amp; co") && svg.contains("lag &lt;p95&gt;"));
        // The highest point (3 s at 1 stream of 4) sits on the top of the plot area.
        assert!(svg.contains(&format!(
            "{:.1},{:.1}",
            MARGIN[0] + (WIDTH - MARGIN[0] - MARGIN[1]) / 4.0,
            MARGIN[2]
        )));
    }
}
