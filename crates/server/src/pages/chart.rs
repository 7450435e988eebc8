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
}
