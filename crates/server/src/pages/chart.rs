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

/// One measurement on a line chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Unix ms.
    pub at: i64,
    pub value: f64,
    /// The time as people read it.
    pub label: String,
    /// Flagged by the plausibility checks: drawn hollow and said so.
    pub suspicious: bool,
}

/// The lines drawn across a chart: the patient's alert thresholds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub low: Option<f64>,
    pub high: Option<f64>,
}

/// How many equal spans of time a long series is cut into to be drawn: at most two
/// points each (plus a flagged one), a few pixels apart on a 640-wide chart.
pub const SPANS_DRAWN: usize = 240;

/// The points a chart draws of a series in time order: all of them when they are few;
/// otherwise, in each of [`SPANS_DRAWN`] equal spans of time, the lowest and the highest
/// of the readings not flagged as suspicious (so a desaturation or a spike is never
/// averaged away, nor hidden behind an artefact) and the first flagged one. Hand-written: it is a dozen lines, and the
/// min/max envelope is what a clinician needs, not the shape-preserving simplification
/// a plotting crate would offer.
pub fn envelope<'a>(pts: &[&'a Point]) -> Vec<&'a Point> {
    if pts.len() <= 2 * SPANS_DRAWN {
        return pts.to_vec();
    }
    let (t0, t1) = (pts[0].at, pts[pts.len() - 1].at);
    let width = i128::from(t1) - i128::from(t0) + 1;
    let span_of = |p: &Point| (i128::from(p.at - t0) * SPANS_DRAWN as i128 / width) as usize;
    let mut out: Vec<&Point> = Vec::with_capacity(3 * SPANS_DRAWN);
    let mut i = 0;
    while i < pts.len() {
        let span = span_of(pts[i]);
        let mut j = i;
        // The lowest and highest of the credible readings (a flagged artefact must not
        // stand in for a real dip), and the first flagged one.
        let (mut lo, mut hi, mut flagged): (Option<usize>, Option<usize>, Option<usize>) =
            (None, None, None);
        while j < pts.len() && span_of(pts[j]) == span {
            if pts[j].suspicious {
                flagged = flagged.or(Some(j));
            } else {
                if lo.is_none_or(|l| pts[j].value < pts[l].value) {
                    lo = Some(j);
                }
                if hi.is_none_or(|h| pts[j].value > pts[h].value) {
                    hi = Some(j);
                }
            }
            j += 1;
        }
        let mut kept: Vec<usize> = [lo, hi, flagged].into_iter().flatten().collect();
        kept.sort_unstable();
        kept.dedup();
        out.extend(kept.into_iter().map(|k| pts[k]));
        i = j;
    }
    out
}

/// A line chart of measurements over time as an inline `<svg>`: the points joined in time
/// order, each labelled for screen readers with its time and value (and "suspicious" when
/// flagged), the lowest and highest values marked on the axis, and the thresholds drawn
/// as dashed lines (the scale widens to show them). A long series is drawn as its
/// [`envelope`]; the description still counts and ranges every measurement.
pub fn line(title: &str, unit: &str, points: &[Point], limits: Limits) -> String {
    const W: f64 = 640.0;
    const H: f64 = 160.0;
    // Below the plot: when the first and the last measurement were taken.
    const TIME_AXIS: f64 = 16.0;
    const PAD: f64 = 28.0;
    let mut all: Vec<&Point> = points.iter().collect();
    all.sort_by_key(|p| p.at);
    let pts = envelope(&all);
    let drawn_all = pts.len() == all.len();
    let (t0, t1) = match (pts.first(), pts.last()) {
        (Some(a), Some(b)) => (a.at, b.at.max(a.at + 1)),
        _ => (0, 1),
    };
    let lo = pts.iter().map(|p| p.value).fold(f64::INFINITY, f64::min);
    let hi = pts.iter().map(|p| p.value).fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 0.0) };
    let (shown_lo, shown_hi) = (lo, hi);
    // The scale covers the thresholds too, so a line is never drawn off the chart.
    let lo = limits.low.into_iter().chain(limits.high).fold(lo, f64::min);
    let hi = limits.low.into_iter().chain(limits.high).fold(hi, f64::max);
    // A flat series still needs a vertical scale.
    let hi = if hi > lo { hi } else { lo + 1.0 };
    let x = |t: i64| PAD + (t - t0) as f64 / (t1 - t0) as f64 * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD / 2.0 - (v - lo) / (hi - lo) * (H - PAD);
    let flagged = all.iter().filter(|p| p.suspicious).count();
    let mut desc = format!(
        "{} measurement{}; lowest {} {unit}; highest {} {unit}",
        all.len(),
        if all.len() == 1 { "" } else { "s" },
        trim(shown_lo),
        trim(shown_hi)
    );
    for (word, v) in [("low", limits.low), ("high", limits.high)] {
        if let Some(v) = v {
            let _ = write!(desc, "; {word} threshold {} {unit}", trim(v));
        }
    }
    if flagged > 0 {
        let _ = write!(desc, "; {flagged} flagged as suspicious");
    }
    if !drawn_all {
        let _ = write!(
            desc,
            "; drawn as the lowest and highest in each of {SPANS_DRAWN} equal spans of time"
        );
    }
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart line" viewBox="0 0 {W} {total}" role="img" aria-label="{title}"><title>{title}</title><desc>{desc}</desc>"#,
        total = H + TIME_AXIS,
        title = escape(title),
        desc = escape(&desc),
    );
    let _ = write!(
        svg,
        r#"<line x1="{PAD}" y1="{b}" x2="{r}" y2="{b}" class="axis"/>"#,
        b = H - PAD / 2.0 + 4.0,
        r = W - PAD
    );
    let top = escape(&trim(shown_hi));
    let _ = write!(svg, r#"<text x="0" y="{}" class="tick">{top}</text>"#, y(shown_hi) + 4.0);
    let _ = write!(
        svg,
        r#"<text x="0" y="{}" class="tick">{}</text>"#,
        y(shown_lo) + 4.0,
        escape(&trim(shown_lo))
    );
    for (word, v) in [("low", limits.low), ("high", limits.high)] {
        if let Some(v) = v {
            let _ = write!(
                svg,
                r#"<line x1="{PAD}" y1="{yv:.1}" x2="{r}" y2="{yv:.1}" class="threshold {word}"/><text x="{tx}" y="{ty:.1}" class="threshold-label">{word} {val}</text>"#,
                yv = y(v),
                r = W - PAD,
                tx = W - PAD - 60.0,
                ty = y(v) - 3.0,
                val = escape(&trim(v)),
            );
        }
    }
    let path: Vec<String> =
        pts.iter().map(|p| format!("{:.1},{:.1}", x(p.at), y(p.value))).collect();
    if pts.len() > 1 {
        let _ = write!(svg, r#"<polyline points="{}" class="series"/>"#, path.join(" "));
    }
    for p in &pts {
        let _ = write!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="{}" class="point{}"><title>{}: {} {}{}</title></circle>"#,
            x(p.at),
            y(p.value),
            if drawn_all { 4 } else { 2 },
            if p.suspicious { " suspicious" } else { "" },
            escape(&p.label),
            escape(&trim(p.value)),
            escape(unit),
            if p.suspicious { " (suspicious reading)" } else { "" },
        );
    }
    if let (Some(first), Some(last)) = (pts.first(), pts.last()) {
        let _ = write!(
            svg,
            r#"<text x="{PAD}" y="{y}" class="tick">{}</text>"#,
            escape(&first.label),
            y = H + TIME_AXIS - 2.0
        );
        if last.at != first.at {
            let _ = write!(
                svg,
                r#"<text x="{r}" y="{y}" class="tick" text-anchor="end">{}</text>"#,
                escape(&last.label),
                r = W - PAD,
                y = H + TIME_AXIS - 2.0
            );
        }
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
        let p =
            |at, value, label: &str| Point { at, value, label: label.into(), suspicious: false };
        let svg = line(
            "Heart rate",
            "/min",
            &[p(2_000, 80.0, "2 May"), p(1_000, 60.0, "1 May"), p(3_000, 70.5, "3 May")],
            Limits::default(),
        );
        assert!(svg.contains("3 measurements; lowest 60 /min; highest 80 /min"), "{svg}");
        assert!(svg.contains("<title>1 May: 60 /min</title>") && svg.contains("70.5"));
        // The time axis names the first and the last measurement's times.
        assert!(svg.contains(r#"class="tick">1 May</text>"#), "{svg}");
        assert!(svg.contains(r#"text-anchor="end">3 May</text>"#), "{svg}");
        // Earliest point on the left edge, latest on the right.
        assert!(svg.contains(r#"<polyline points="28.0,"#), "{svg}");
        assert!(!svg.contains("threshold"));
        assert!(line("none", "%", &[], Limits::default()).contains("0 measurements"));
        assert!(
            line("one", "%", &[p(1, 97.0, "x")], Limits::default())
                .contains("1 measurement; lowest 97 %; highest 97 %")
        );
    }

    #[test]
    fn a_long_series_is_drawn_as_its_envelope_keeping_dips_spikes_and_flags() {
        // A week of minute readings between 95 and 97, one dip to 81 with a flagged
        // artefact of 45 a minute later, one spike to 99, one reading flagged as
        // suspicious at an ordinary value.
        let points: Vec<Point> = (0..10_080)
            .map(|m: i64| Point {
                at: m * 60_000,
                value: match m {
                    4_000 => 81.0,
                    4_001 => 45.0,
                    7_000 => 99.0,
                    _ => 95.0 + (m % 3) as f64,
                },
                label: format!("m{m}"),
                suspicious: m == 5_001 || m == 4_001,
            })
            .collect();
        let refs: Vec<&Point> = points.iter().collect();
        let kept = envelope(&refs);
        assert!(kept.len() <= 3 * SPANS_DRAWN && kept.len() >= SPANS_DRAWN, "{}", kept.len());
        assert!(kept.windows(2).all(|w| w[0].at < w[1].at), "in time order, each once");
        // The dip beside an artefact in the same span is drawn, and so is the artefact.
        for m in ["m4000", "m4001", "m7000", "m5001"] {
            assert!(kept.iter().any(|p| p.label == m), "{m} is drawn");
        }
        let svg = line("SpO2", "%", &points, Limits::default());
        assert!(svg.contains("10080 measurements; lowest 45 %; highest 99 %"));
        assert!(svg.contains("2 flagged as suspicious; drawn as the lowest and highest"));
        assert_eq!(svg.matches("<circle").count(), kept.len());
        // A short series is drawn point by point.
        assert_eq!(envelope(&refs[..2 * SPANS_DRAWN]).len(), 2 * SPANS_DRAWN);
    }

    #[test]
    fn thresholds_are_drawn_inside_the_scale_and_suspicious_points_marked() {
        let points = [
            Point { at: 1, value: 95.0, label: "a".into(), suspicious: false },
            Point { at: 2, value: 60.0, label: "b".into(), suspicious: true },
        ];
        let svg = line("SpO2", "%", &points, Limits { low: Some(90.0), high: None });
        assert!(svg.contains("low threshold 90 %; 1 flagged as suspicious"), "{svg}");
        assert!(svg.contains(r#"class="threshold low""#) && svg.contains(">low 90</text>"));
        assert!(svg.contains(r#"class="point suspicious""#));
        assert!(svg.contains("b: 60 % (suspicious reading)"));
        // A threshold above every value still lies on the chart (y within the viewBox).
        let above = line("HR", "/min", &points, Limits { low: None, high: Some(130.0) });
        let y: f64 = above
            .split(r#"class="threshold high""#)
            .next()
            .and_then(|s| s.rsplit("y1=\"").next())
            .and_then(|s| s.split('"').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1.0);
        assert!((0.0..=160.0).contains(&y), "{above}");
    }
}
