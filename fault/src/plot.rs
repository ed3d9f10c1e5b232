//! The run's picture: acknowledged records per second and produce latency over time, with each
//! fault drawn as a band (as Jepsen's timeline plots do). A PNG, drawn without a browser.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use crate::history::{History, Op, Outcome};
use crate::nemesis::FaultKind;

/// A fault as it happened: kind, start and end in seconds from the start of the run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Span {
    /// What.
    pub kind: FaultKind,
    /// Which broker or consumer.
    pub target: u32,
    /// From (s).
    pub from: f64,
    /// To (s).
    pub to: f64,
}

fn color(kind: FaultKind) -> RGBColor {
    match kind {
        FaultKind::Kill => RGBColor(220, 50, 47),
        FaultKind::Pause => RGBColor(108, 113, 196),
        FaultKind::Partition => RGBColor(203, 75, 22),
        FaultKind::Loss => RGBColor(181, 137, 0),
        FaultKind::Delay => RGBColor(42, 161, 152),
        FaultKind::Duplicate => RGBColor(133, 153, 0),
        FaultKind::Reorder => RGBColor(38, 139, 210),
        FaultKind::DiskFull => RGBColor(88, 88, 88),
        FaultKind::KillConsumer => RGBColor(211, 54, 130),
        FaultKind::PowerLoss => RGBColor(120, 20, 20),
    }
}

/// Registers a system font for labels (DejaVu Sans from Debian's fonts-dejavu-core); without
/// one the picture has no text.
fn font_ready() -> bool {
    static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *READY.get_or_init(|| {
        for path in [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        ] {
            if let Ok(bytes) = std::fs::read(path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// (second, acknowledged records per second).
pub type RateSeries = Vec<(f64, f64)>;
/// (second, p50 ms, p99 ms).
pub type LatencySeries = Vec<(f64, f64, f64)>;

/// Per-bucket series from the history: acknowledgements per second, and produce latency.
pub fn series(history: &History, bucket_s: f64) -> (RateSeries, LatencySeries) {
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut lat: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for op in &history.ops {
        let (Op::Produce { .. }, Outcome::Ok { .. }, Some(done)) =
            (&op.op, &op.outcome, op.completed)
        else {
            continue;
        };
        let b = (done as f64 / 1e6 / bucket_s) as u64;
        *acked.entry(b).or_default() += 1;
        lat.entry(b)
            .or_default()
            .push((done - op.invoked) as f64 / 1e3);
    }
    let last = acked.keys().chain(lat.keys()).max().copied().unwrap_or(0);
    let rate = (0..=last)
        .map(|b| {
            (
                b as f64 * bucket_s,
                *acked.get(&b).unwrap_or(&0) as f64 / bucket_s,
            )
        })
        .collect();
    let lats = lat
        .into_iter()
        .map(|(b, mut v)| {
            v.sort_by(f64::total_cmp);
            let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
            (b as f64 * bucket_s, q(0.5), q(0.99))
        })
        .collect();
    (rate, lats)
}

/// Draws the picture to `path` (PNG).
pub fn draw(
    path: &Path,
    title: &str,
    history: &History,
    spans: &[Span],
    duration_s: f64,
) -> Result<(), String> {
    let text = font_ready();
    // About 600 points across, whatever the run's length (thick polylines with many sharp turns
    // draw spikes past their points in plotters, so lines are one pixel wide too).
    let bucket = (duration_s / 600.0).max(0.5);
    let (rate, lats) = series(history, bucket);
    let root = BitMapBackend::new(path, (1400, 830)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (charts, legend) = root.split_vertically(800);
    let (top, bottom) = charts.split_vertically(400);
    let max_rate = rate.iter().map(|r| r.1).fold(1.0, f64::max) * 1.1;
    let max_lat = lats.iter().map(|l| l.2).fold(1.0, f64::max) * 1.1;
    let x_end = duration_s.max(rate.last().map_or(1.0, |r| r.0 + 1.0));

    let bands = |chart: &mut ChartContext<'_, BitMapBackend<'_>, Cartesian2d<_, _>>,
                 y_max: f64|
     -> Result<(), String> {
        chart
            .draw_series(spans.iter().map(|s| {
                Rectangle::new(
                    [(s.from, 0.0), (s.to.max(s.from + 0.05), y_max)],
                    color(s.kind).mix(0.25).filled(),
                )
            }))
            .map_err(|e| e.to_string())?;
        Ok(())
    };

    // The counts lead; other anomaly kinds, if any, go to the strip at the bottom.
    let (headline, also) = match title.split_once("; also ") {
        Some((h, a)) => (h, Some(a)),
        None => (title, None),
    };
    let mut c1 = ChartBuilder::on(&top);
    c1.margin(10);
    if text {
        c1.caption(headline, ("sans-serif", 18))
            .x_label_area_size(30)
            .y_label_area_size(70);
    }
    let mut c1 = c1
        .build_cartesian_2d(0.0..x_end, 0.0..max_rate)
        .map_err(|e| e.to_string())?;
    if text {
        c1.configure_mesh()
            .y_desc("acknowledged records/s")
            .draw()
            .map_err(|e| e.to_string())?;
    }
    bands(&mut c1, max_rate)?;
    c1.draw_series(LineSeries::new(rate.iter().copied(), BLACK.stroke_width(1)))
        .map_err(|e| e.to_string())?;

    let mut c2 = ChartBuilder::on(&bottom);
    c2.margin(10);
    if text {
        c2.x_label_area_size(40).y_label_area_size(70);
    }
    let mut c2 = c2
        .build_cartesian_2d(0.0..x_end, (0.1..max_lat).log_scale())
        .map_err(|e| e.to_string())?;
    if text {
        c2.configure_mesh()
            .x_desc("seconds")
            .y_desc("produce latency, ms (p50 blue, p99 red)")
            .draw()
            .map_err(|e| e.to_string())?;
    }
    c2.draw_series(spans.iter().map(|s| {
        Rectangle::new(
            [(s.from, 0.1), (s.to.max(s.from + 0.05), max_lat)],
            color(s.kind).mix(0.25).filled(),
        )
    }))
    .map_err(|e| e.to_string())?;
    c2.draw_series(LineSeries::new(
        lats.iter().map(|l| (l.0, l.1.max(0.1))),
        BLUE.stroke_width(1),
    ))
    .map_err(|e| e.to_string())?;
    c2.draw_series(LineSeries::new(
        lats.iter().map(|l| (l.0, l.2.max(0.1))),
        RED.stroke_width(1),
    ))
    .map_err(|e| e.to_string())?;
    if text {
        // A legend of the fault kinds that happened.
        let mut kinds: Vec<FaultKind> = spans.iter().map(|s| s.kind).collect();
        kinds.sort();
        kinds.dedup();
        for (i, k) in kinds.iter().enumerate() {
            let x = 90 + i as i32 * 140;
            legend
                .draw(&Rectangle::new(
                    [(x, 6), (x + 18, 21)],
                    color(*k).mix(0.5).filled(),
                ))
                .map_err(|e| e.to_string())?;
            legend
                .draw(&Text::new(k.name(), (x + 24, 6), ("sans-serif", 15)))
                .map_err(|e| e.to_string())?;
        }
        if let Some(also) = also {
            let x = 90 + kinds.len() as i32 * 140;
            legend
                .draw(&Text::new(
                    format!("also: {also}"),
                    (x, 6),
                    ("sans-serif", 15).into_font().color(&RED),
                ))
                .map_err(|e| e.to_string())?;
        }
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Acks, Operation, Tp, Written};

    #[test]
    fn series_counts_acknowledgements_per_second_and_latency_quantiles() {
        let op = |id: u64, invoked: u64, done: u64| Operation {
            id,
            process: 0,
            invoked,
            completed: Some(done),
            op: Op::Produce {
                tp: Tp::new("t", 0),
                written: Written {
                    producer: 0,
                    seq: id,
                },
                acks: Acks::All,
            },
            outcome: Outcome::Ok {
                offset: Some(id as i64),
            },
        };
        // Two in the first second (1 ms and 3 ms), one in the third (10 ms).
        let h = History {
            ops: vec![
                op(0, 0, 1_000),
                op(1, 500_000, 503_000),
                op(2, 2_000_000, 2_010_000),
            ],
        };
        let (rate, lat) = series(&h, 1.0);
        assert_eq!(rate, vec![(0.0, 2.0), (1.0, 0.0), (2.0, 1.0)]);
        assert_eq!(lat, vec![(0.0, 3.0, 3.0), (2.0, 10.0, 10.0)]);
    }

    #[test]
    fn the_picture_is_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.png");
        let h = History::default();
        let spans = [Span {
            kind: FaultKind::Kill,
            target: 1,
            from: 1.0,
            to: 2.0,
        }];
        draw(&path, "test", &h, &spans, 5.0).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }
}
