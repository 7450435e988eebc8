//! Small server-rendered SVG charts: no script, no external resources, readable by screen
//! readers (a title, a description, and each bar labelled), and drawn in the page's colours.

use std::fmt::Write as _;

/// One bar: its label (shown under the axis when there is room) and its value.
#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub value: u64,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A bar chart as an inline `<svg>` element, `title` read out by screen readers.
pub fn bars(title: &str, bars: &[Bar]) -> String {
    const W: usize = 640;
    const H: usize = 180;
    const AXIS: usize = 24;
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0).max(1);
    let n = bars.len().max(1);
    let slot = W as f64 / n as f64;
    let width = (slot * 0.8).max(1.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {W} {total}" role="img" aria-labelledby="chart-title chart-desc" preserveAspectRatio="none"><title id="chart-title">{title}</title><desc id="chart-desc">{desc}</desc>"#,
        total = H + AXIS,
        title = escape(title),
        desc = escape(&format!(
            "{} bars; highest {}; total {}",
            bars.len(),
            max,
            bars.iter().map(|b| b.value).sum::<u64>()
        )),
    );
    let _ = write!(svg, r#"<line x1="0" y1="{H}" x2="{W}" y2="{H}" class="axis"/>"#);
    let label_every = n.div_ceil(8);
    for (i, b) in bars.iter().enumerate() {
        let h = (b.value as f64 / max as f64 * (H - 4) as f64).round();
        let x = i as f64 * slot + (slot - width) / 2.0;
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{width:.1}" height="{h:.1}" class="bar"><title>{label}: {v}</title></rect>"#,
            y = H as f64 - h,
            label = escape(&b.label),
            v = b.value,
        );
        if i % label_every == 0 {
            let _ = write!(
                svg,
                r#"<text x="{tx:.1}" y="{ty}" class="tick">{label}</text>"#,
                tx = x,
                ty = H + 16,
                label = escape(&b.label),
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// A line chart of measurements over time (Unix ms, value) as an inline `<svg>`: the
/// points joined in time order, each point labelled for screen readers with its time and
/// value, the lowest and highest values marked on the axis.
pub fn line(title: &str, unit: &str, points: &[(i64, f64, String)]) -> String {
    const W: f64 = 640.0;
    const H: f64 = 160.0;
    const PAD: f64 = 28.0;
    let mut pts: Vec<&(i64, f64, String)> = points.iter().collect();
    pts.sort_by_key(|p| p.0);
    let (t0, t1) = match (pts.first(), pts.last()) {
        (Some(a), Some(b)) => (a.0, b.0.max(a.0 + 1)),
        _ => (0, 1),
    };
    let lo = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 0.0) };
    let (shown_lo, shown_hi) = (lo, hi);
    // A flat series still needs a vertical scale.
    let hi = if hi > lo { hi } else { lo + 1.0 };
    let x = |t: i64| PAD + (t - t0) as f64 / (t1 - t0) as f64 * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD / 2.0 - (v - lo) / (hi - lo) * (H - PAD);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart line" viewBox="0 0 {W} {H}" role="img" aria-label="{title}"><title>{title}</title><desc>{desc}</desc>"#,
        title = escape(title),
        desc = escape(&format!(
            "{} measurement{}; lowest {} {unit}; highest {} {unit}",
            pts.len(),
            if pts.len() == 1 { "" } else { "s" },
            trim(shown_lo),
            trim(shown_hi)
        )),
    );
    let _ = write!(
        svg,
        r#"<line x1="{PAD}" y1="{b}" x2="{r}" y2="{b}" class="axis"/>"#,
        b = H - PAD / 2.0 + 4.0,
        r = W - PAD
    );
    let top = escape(&trim(shown_hi));
    let _ = write!(svg, r#"<text x="0" y="{}" class="tick">{top}</text>"#, y(hi) + 4.0);
    let _ =
        write!(svg, r#"<text x="0" y="{}" class="tick">{}</text>"#, y(lo) + 4.0, escape(&trim(lo)));
    let path: Vec<String> = pts.iter().map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1))).collect();
    if pts.len() > 1 {
        let _ = write!(svg, r#"<polyline points="{}" class="series"/>"#, path.join(" "));
    }
    for p in &pts {
        let _ = write!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="4" class="point"><title>{}: {} {}</title></circle>"#,
            x(p.0),
            y(p.1),
            escape(&p.2),
            escape(&trim(p.1)),
            escape(unit)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A number without a trailing `.0`.
fn trim(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v:.1}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_highest_and_escape_labels() {
        let svg = bars(
            "Audit activity <per hour>",
            &[Bar { label: "09:00".into(), value: 2 }, Bar { label: "a&b".into(), value: 4 }],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("Audit activity &lt;per hour&gt;"));
        assert!(svg.contains("a&amp;b: 4"));
        assert!(svg.contains(r#"height="176.0""#), "the highest bar fills the chart: {svg}");
        assert!(svg.contains(r#"height="88.0""#));
        assert!(bars("empty", &[]).contains("0 bars"));
    }

    #[test]
    fn lines_join_points_in_time_order_and_label_each() {
        let svg = line(
            "Heart rate",
            "/min",
            &[
                (2_000, 80.0, "2 May".into()),
                (1_000, 60.0, "1 May".into()),
                (3_000, 70.5, "3 May".into()),
            ],
        );
        assert!(svg.contains("3 measurements; lowest 60 /min; highest 80 /min"), "{svg}");
        assert!(svg.contains("<title>1 May: 60 /min</title>") && svg.contains("70.5"));
        // Earliest point on the left edge, latest on the right.
        assert!(svg.contains(r#"<polyline points="28.0,"#), "{svg}");
        assert!(line("none", "%", &[]).contains("0 measurements"));
        assert!(
            line("one", "%", &[(1, 97.0, "x".into())])
                .contains("1 measurement; lowest 97 %; highest 97 %")
        );
    }
}
