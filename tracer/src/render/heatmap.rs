//! A latency heat map per disk, as in Brendan Gregg's heat maps: time
//! across (one column per interval of the capture), latency up (log2
//! microsecond bands, as biolatency's), colour by how many requests fell
//! there. Built from the interval reports as a capture streams by: what it
//! keeps is a count per interval, disk and band.

use std::{collections::BTreeMap, fmt::Write as _};

use crate::model::Report;

/// Bands 0..BANDS: band 0 is below 2 us, band k is [2^k, 2^(k+1)) us; the
/// last takes everything slower (2^24 us is about 17 s).
const BANDS: usize = 25;

#[derive(Default)]
pub struct Heatmap {
    /// Per interval: its start and length, and per disk the counts per band.
    columns: Vec<(f64, f64, BTreeMap<String, [u64; BANDS]>)>,
}

fn band(latency_us: f64) -> usize {
    if latency_us < 2.0 { 0 } else { (latency_us.log2().floor() as usize).min(BANDS - 1) }
}

impl Heatmap {
    /// One interval report's block histograms (all operations of a disk
    /// together), by each bucket's midpoint.
    pub fn add(&mut self, report: &Report) {
        let mut disks: BTreeMap<String, [u64; BANDS]> = BTreeMap::new();
        for row in &report.block {
            let bands = disks.entry(row.device.clone()).or_insert([0; BANDS]);
            for b in &row.histogram {
                bands[band((b.low_us + b.high_us) / 2.0)] += b.count;
            }
        }
        self.columns.push((report.window.offset_s, report.window.duration_s, disks));
    }

    /// The SVG: one panel per disk, a legend for the colours.
    pub fn render(&self, title: &str) -> String {
        let disks: Vec<&String> = {
            let mut d: Vec<&String> = self.columns.iter().flat_map(|c| c.2.keys()).collect();
            d.sort();
            d.dedup();
            d
        };
        let (left, top, cell_h, width) = (90.0, 50.0, 12.0, 1000.0);
        let panel_h = BANDS as f64 * cell_h + 50.0;
        let height = top + panel_h * disks.len().max(1) as f64 + 20.0;
        let span = self.columns.last().map_or(1.0, |c| c.0 + c.1).max(1e-9);
        let max =
            self.columns.iter().flat_map(|c| c.2.values()).flat_map(|b| b.iter()).copied().max().unwrap_or(0);
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="{w}" height="{height}" viewBox="0 0 {w} {height}" xmlns="http://www.w3.org/2000/svg" font-family="Verdana" font-size="11">
<rect x="0" y="0" width="{w}" height="{height}" fill="white"/>
<text x="{cx}" y="22" text-anchor="middle" font-size="16">{title}</text>
<text x="{cx}" y="40" text-anchor="middle">block I/O latency per disk: time across, latency up (log2 us), colour by requests (darkest: {max})</text>"#,
            w = width + left + 20.0,
            cx = (width + left) / 2.0,
            title = xml_escape(title),
        );
        if disks.is_empty() {
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="middle">no block requests in this capture</text>"#,
                (width + left) / 2.0,
                top + 30.0
            );
        }
        for (p, disk) in disks.iter().enumerate() {
            let y0 = top + p as f64 * panel_h + 20.0;
            let _ = writeln!(
                svg,
                r#"<text x="{left}" y="{}" font-size="13">{}</text>"#,
                y0 - 6.0,
                xml_escape(disk)
            );
            let _ = writeln!(
                svg,
                r##"<rect x="{left}" y="{y0}" width="{width}" height="{}" fill="#f8f8f8" stroke="#999"/>"##,
                BANDS as f64 * cell_h
            );
            for k in (0..BANDS).step_by(3) {
                let y = y0 + (BANDS - 1 - k) as f64 * cell_h + cell_h * 0.8;
                let label = if k == 0 { "&lt;2 us".to_string() } else { human_us(1u64 << k) };
                let _ = writeln!(svg, r#"<text x="{}" y="{y}" text-anchor="end">{label}</text>"#, left - 4.0);
            }
            for (start, len, bands) in &self.columns {
                let Some(counts) = bands.get(*disk) else { continue };
                let x = left + start / span * width;
                let w = (len / span * width).max(1.0);
                for (k, &count) in counts.iter().enumerate().filter(|(_, c)| **c > 0) {
                    let y = y0 + (BANDS - 1 - k) as f64 * cell_h;
                    let _ = writeln!(
                        svg,
                        r#"<rect x="{x:.2}" y="{y}" width="{w:.2}" height="{cell_h}" fill="{}"><title>{:.1}s-{:.1}s, {}: {count} requests</title></rect>"#,
                        colour(count, max),
                        start,
                        start + len,
                        if k == 0 {
                            "&lt;2 us".to_string()
                        } else {
                            format!("{}-{}", human_us(1 << k), human_us(1 << (k + 1)))
                        },
                    );
                }
            }
            let axis_y = y0 + BANDS as f64 * cell_h + 14.0;
            for i in 0..=5 {
                let t = span * i as f64 / 5.0;
                let x = left + width * i as f64 / 5.0;
                let _ = writeln!(svg, r#"<text x="{x}" y="{axis_y}" text-anchor="middle">{t:.0}s</text>"#);
            }
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// White through yellow to dark red, by the count's share of the largest
/// on a log scale (one request must still show).
fn colour(count: u64, max: u64) -> String {
    let share = if max <= 1 { 1.0 } else { (count as f64).ln_1p() / (max as f64).ln_1p() };
    let (r, g, b) = if share < 0.5 {
        let s = share * 2.0;
        (255.0, 255.0 - 55.0 * s, 200.0 * (1.0 - s))
    } else {
        let s = (share - 0.5) * 2.0;
        (255.0 - 115.0 * s, 200.0 * (1.0 - s), 0.0)
    };
    format!("rgb({},{},{})", r as u8, g as u8, b as u8)
}

fn human_us(us: u64) -> String {
    match us {
        u if u >= 1_000_000 => format!("{}s", u / 1_000_000),
        u if u >= 1000 => format!("{}ms", u / 1000),
        u => format!("{u}us"),
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use quick_xml::{Reader, events::Event};

    use super::*;
    use crate::model::{BlockRow, Bucket, Percentiles, Window};

    fn interval(offset_s: f64, buckets: &[(f64, u64)]) -> Report {
        Report {
            window: Window { offset_s, duration_s: 1.0, ..Window::default() },
            block: vec![BlockRow {
                device: "loop0".into(),
                dev: "7:0".into(),
                op: "read".into(),
                count: buckets.iter().map(|b| b.1).sum(),
                bytes: 0,
                errors: 0,
                untimed: 0,
                latency_us: Percentiles::default(),
                histogram: buckets
                    .iter()
                    .map(|&(us, count)| Bucket { low_us: us, high_us: us, count, index: None })
                    .collect(),
            }],
            ..Report::default()
        }
    }

    #[test]
    fn cells_are_counts_per_interval_and_band_and_the_svg_is_well_formed() {
        let mut map = Heatmap::default();
        map.add(&interval(0.0, &[(5.0, 10), (6.0, 2)]));
        map.add(&interval(1.0, &[(3000.0, 1)]));
        assert_eq!(map.columns[0].2["loop0"][band(5.0)], 12);
        assert_eq!(map.columns[1].2["loop0"][band(3000.0)], 1);
        let svg = map.render("t & t");
        let mut reader = Reader::from_str(&svg);
        let (mut cells, mut titles) = (0, Vec::new());
        loop {
            match reader.read_event().unwrap() {
                Event::Eof => break,
                Event::Start(e) if e.name().as_ref() == b"rect" => cells += 1,
                Event::Text(t) => titles.push(t.decode().unwrap().into_owned()),
                _ => {}
            }
        }
        assert_eq!(cells, 2, "one cell per non-empty interval and band");
        assert!(titles.iter().any(|t| t.contains("12 requests")), "{titles:?}");
        assert!(svg.contains("t &amp; t"));
    }
}
