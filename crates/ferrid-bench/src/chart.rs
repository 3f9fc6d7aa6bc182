//! The issuance chart (SVG, drawn with plotters): credentials/s against concurrency,
//! one line per measured series (solid, or short dashes for a variant such as the
//! server without its audit log), and a long-dashed horizontal line per raw limit. Both axes
//! are logarithmic: the figures span from OpenBao's hundreds to ES256's tens of
//! thousands a second, and the concurrency levels are powers of four.
use anyhow::{Result, anyhow};
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One line: credentials/s at each concurrency.
pub(crate) struct Series {
    /// The legend's text.
    pub(crate) label: String,
    /// Series with the same key share a colour (e.g. the same call against two
    /// configurations of the server, one of them `dashed`).
    pub(crate) key: String,
    /// Drawn dashed rather than solid.
    pub(crate) dashed: bool,
    /// `(concurrency, credentials/s)`, in increasing concurrency.
    pub(crate) points: Vec<(usize, f64)>,
}

/// A horizontal reference line (a rate that does not depend on concurrency).
pub(crate) struct Limit {
    /// The legend's text.
    pub(crate) label: String,
    /// Credentials (or operations) a second.
    pub(crate) rate: f64,
}

/// What the chart shows.
pub(crate) struct Chart {
    /// The caption above the plot.
    pub(crate) title: String,
    /// The measured lines.
    pub(crate) series: Vec<Series>,
    /// The reference lines.
    pub(crate) limits: Vec<Limit>,
}

const WIDTH: u32 = 960;
const PLOT_HEIGHT: u32 = 460;
const LEGEND_ROW: i32 = 26;
/// Colour-blind-safe colours (Okabe–Ito) for the series, in order.
const SERIES: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
];
/// Dash and gap lengths (pixels) of dashed series, and of the limits' longer dashes.
const SERIES_DASH: (u32, u32) = (5, 4);
const LIMIT_DASH: (u32, u32) = (14, 6);
/// The reference lines, dashed.
const LIMITS: [RGBColor; 3] = [RGBColor(0, 0, 0), RGBColor(120, 120, 120), RGBColor(170, 170, 170)];

impl Chart {
    /// The chart as an SVG document; `None` when there is nothing to draw.
    pub(crate) fn svg(&self) -> Result<Option<String>> {
        let values = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .chain(self.limits.iter().map(|l| l.rate))
            .filter(|v| v.is_finite() && *v > 0.0);
        let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let mut xs: Vec<usize> = self.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).collect();
        xs.sort_unstable();
        xs.dedup();
        xs.retain(|x| *x > 0);
        if hi <= 0.0 || xs.is_empty() {
            return Ok(None);
        }
        let (x0, x1) = (xs[0] as f64 / 1.5, xs[xs.len() - 1] as f64 * 1.5);
        let (y0, y1) = (lo / 1.6, hi * 1.6);
        let legend_rows = self.series.len().max(self.limits.len()) as u32;
        let height = PLOT_HEIGHT + 24 + legend_rows * LEGEND_ROW as u32;
        let err = |e: &dyn std::fmt::Display| anyhow!("drawing the chart: {e}");

        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| err(&e))?;
            let (top, legend) = root.split_vertically(PLOT_HEIGHT);
            let mut chart = ChartBuilder::on(&top)
                .caption(&self.title, ("sans-serif", 24))
                .margin(12)
                .margin_right(32)
                .x_label_area_size(52)
                .y_label_area_size(84)
                .build_cartesian_2d(
                    (x0..x1).log_scale().with_key_points(xs.iter().map(|x| *x as f64).collect()),
                    (y0..y1).log_scale().with_key_points(ticks(y0, y1)),
                )
                .map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .x_desc("concurrency: closed-loop clients, each on its own connection (log scale)")
                .y_desc("credentials/s (log scale)")
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| thousands(*y))
                .bold_line_style(BLACK.mix(0.12))
                .axis_desc_style(("sans-serif", 17))
                .label_style(("sans-serif", 16))
                .draw()
                .map_err(|e| err(&e))?;
            for (l, color) in self.limits.iter().zip(LIMITS.iter().cycle()) {
                let line = [(x0, l.rate), (x1, l.rate)];
                chart
                    .draw_series(DashedLineSeries::new(
                        line,
                        LIMIT_DASH.0,
                        LIMIT_DASH.1,
                        color.stroke_width(2),
                    ))
                    .map_err(|e| err(&e))?;
            }
            let colors = self.colors();
            for (s, color) in self.series.iter().zip(&colors) {
                let pts: Vec<(f64, f64)> =
                    s.points.iter().filter(|p| p.0 > 0 && p.1 > 0.0).map(|&(x, y)| (x as f64, y)).collect();
                let style = color.stroke_width(2);
                if s.dashed {
                    chart.draw_series(DashedLineSeries::new(pts.clone(), SERIES_DASH.0, SERIES_DASH.1, style))
                } else {
                    chart.draw_series(LineSeries::new(pts.clone(), style))
                }
                .map_err(|e| err(&e))?;
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                    .map_err(|e| err(&e))?;
            }

            // The legend under the plot: measured series on the left, limits on the right.
            let text =
                TextStyle::from(("sans-serif", 16).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
            let half = (WIDTH / 2) as i32;
            for (i, (s, color)) in self.series.iter().zip(&colors).enumerate() {
                let (x, y) = (96, 14 + i as i32 * LEGEND_ROW);
                let (line, style) = ([(x, y), (x + 36, y)], color.stroke_width(2));
                if s.dashed {
                    legend.draw(&DashedPathElement::new(line, SERIES_DASH.0, SERIES_DASH.1, style))
                } else {
                    legend.draw(&PathElement::new(line, style))
                }
                .and_then(|_| legend.draw(&Circle::new((x + 18, y), 4, color.filled())))
                .and_then(|_| legend.draw(&Text::new(s.label.clone(), (x + 46, y), text.clone())))
                .map_err(|e| err(&e))?;
            }
            for (i, (l, color)) in self.limits.iter().zip(LIMITS.iter().cycle()).enumerate() {
                let (x, y) = (half + 24, 14 + i as i32 * LEGEND_ROW);
                let line = [(x, y), (x + 36, y)];
                legend
                    .draw(&DashedPathElement::new(line, LIMIT_DASH.0, LIMIT_DASH.1, color.stroke_width(2)))
                    .and_then(|_| legend.draw(&Text::new(l.label.clone(), (x + 46, y), text.clone())))
                    .map_err(|e| err(&e))?;
            }
            root.present().map_err(|e| err(&e))?;
        }
        Ok(Some(svg))
    }
}

impl Chart {
    /// Each series' colour: one per distinct key, in order of first appearance.
    fn colors(&self) -> Vec<RGBColor> {
        let mut keys: Vec<&str> = Vec::new();
        self.series
            .iter()
            .map(|s| {
                let i = keys.iter().position(|k| *k == s.key).unwrap_or_else(|| {
                    keys.push(&s.key);
                    keys.len() - 1
                });
                SERIES[i % SERIES.len()]
            })
            .collect()
    }
}

/// Tick values 1, 2 and 5 × 10ⁿ within `lo..=hi` (every integer multiple when that
/// gives fewer than three).
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let decades = || (lo.log10().floor() as i32)..=(hi.log10().ceil() as i32);
    let pick = |mults: &[f64]| -> Vec<f64> {
        decades()
            .flat_map(|e| mults.iter().map(move |m| m * 10f64.powi(e)))
            .filter(|v| *v >= lo && *v <= hi)
            .collect()
    };
    let t = pick(&[1.0, 2.0, 5.0]);
    if t.len() >= 3 { t } else { pick(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]) }
}

/// `12345.6` → `12,346`.
pub(crate) fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 && digits != "0" { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_thousands() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(44759.2), "44,759");
        assert_eq!(thousands(1234567.0), "1,234,567");
    }

    #[test]
    fn ticks_are_one_two_five() {
        assert_eq!(ticks(400.0, 60000.0), vec![500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0, 50000.0]);
        assert_eq!(ticks(1100.0, 1900.0), Vec::<f64>::new());
        assert_eq!(ticks(1100.0, 4500.0), vec![2000.0, 3000.0, 4000.0]);
    }

    #[test]
    fn draws_an_svg_with_every_label() {
        let series = |label: &str, key: &str, dashed: bool, at: f64| Series {
            label: label.into(),
            key: key.into(),
            dashed,
            points: vec![(1, at), (4, at * 1.5)],
        };
        let chart = Chart {
            title: "Issuance".into(),
            series: vec![
                series("Ferrid X.509-SVID, 1 CSR a call", "x509", false, 2000.0),
                series("Ferrid, audit off X.509-SVID, 1 CSR a call", "x509", true, 2500.0),
                series("OpenBao & co <pki/sign>", "bao", false, 600.0),
            ],
            limits: vec![Limit { label: "ES256 sign".into(), rate: 40000.0 }],
        };
        assert_eq!(chart.colors(), vec![SERIES[0], SERIES[0], SERIES[1]]);
        let svg = chart.svg().unwrap().unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("Ferrid X.509-SVID, 1 CSR a call"));
        assert!(svg.contains("ES256 sign"));
        // Text is escaped for XML.
        assert!(svg.contains("OpenBao &amp; co &lt;pki/sign&gt;"), "{svg}");
        let empty = Chart { title: "x".into(), series: vec![], limits: vec![] };
        assert!(empty.svg().unwrap().is_none());
    }
}
