//! Tables and plots derived from a results folder's `samples.jsonl`: per-layer and per-head
//! means and medians (overall and by modality) for grounding runs, accuracy tables for eval
//! runs, and the figures of the paper (per-layer ratio curve, layer x head heatmap).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::progress::read_records;

pub(super) fn mean(values: &[f64]) -> f64 {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return f64::NAN;
    }
    finite.iter().sum::<f64>() / finite.len() as f64
}

fn median(values: &[f64]) -> f64 {
    let mut finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return f64::NAN;
    }
    finite.sort_by(|a, b| a.total_cmp(b));
    let n = finite.len();
    if n % 2 == 1 {
        finite[n / 2]
    } else {
        (finite[n / 2 - 1] + finite[n / 2]) / 2.0
    }
}

fn numbers(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect())
        .unwrap_or_default()
}

/// Per-layer values of one metric across records: `[layer][sample]`.
fn per_layer(records: &[&Value], metric: &str) -> Vec<Vec<f64>> {
    let mut columns: Vec<Vec<f64>> = Vec::new();
    for record in records {
        let values = numbers(&record["per_layer"][metric]);
        if columns.is_empty() {
            columns = vec![Vec::new(); values.len()];
        }
        for (column, value) in columns.iter_mut().zip(values) {
            column.push(value);
        }
    }
    columns
}

/// Mean per-head ratio and JS over the usable records.
pub struct HeadMeans {
    pub layers: usize,
    pub heads: usize,
    pub samples: usize,
    pub ratio: Vec<Vec<f64>>,
    pub js: Vec<Vec<f64>>,
    pub ratio_median: Vec<Vec<f64>>,
    pub kl: Vec<Vec<f64>>,
}

pub fn head_means(records: &[Value]) -> HeadMeans {
    let usable: Vec<&Value> = records
        .iter()
        .filter(|r| r.get("per_head").is_some())
        .collect();
    let table = |metric: &str, reduce: fn(&[f64]) -> f64| -> Vec<Vec<f64>> {
        let first = usable.first().map(|r| &r["per_head"][metric]);
        let layers = first
            .and_then(|v| v.as_array())
            .map(|a| a.len())
            .unwrap_or(0);
        (0..layers)
            .map(|l| {
                let heads = first.map(|v| numbers(&v[l]).len()).unwrap_or(0);
                (0..heads)
                    .map(|h| {
                        let values: Vec<f64> = usable
                            .iter()
                            .map(|r| r["per_head"][metric][l][h].as_f64().unwrap_or(f64::NAN))
                            .collect();
                        reduce(&values)
                    })
                    .collect()
            })
            .collect()
    };
    let ratio = table("ratio", mean);
    HeadMeans {
        layers: ratio.len(),
        heads: ratio.first().map(|r| r.len()).unwrap_or(0),
        samples: usable.len(),
        js: table("js", mean),
        kl: table("kl", mean),
        ratio_median: table("ratio", median),
        ratio,
    }
}

fn fmt(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.6}")
    } else {
        "nan".into()
    }
}

/// Write per_layer.csv, per_head.csv, summary.json and the two plots of a grounding run.
pub fn grounding_report(out: &Path) -> Result<()> {
    let records = read_records(&out.join("samples.jsonl"))?;
    let usable: Vec<&Value> = records
        .iter()
        .filter(|r| r.get("per_layer").is_some())
        .collect();
    let mut groups: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    groups.insert("all".into(), usable.clone());
    for record in &usable {
        let modality = record["modality"].as_str().unwrap_or("unknown").to_string();
        groups.entry(modality).or_default().push(record);
    }
    let mut csv = String::from(
        "modality,layer,n,ratio_mean,ratio_median,kl_mean,kl_median,js_mean,js_median\n",
    );
    let mut curves: Vec<(String, Vec<f64>)> = Vec::new();
    for (modality, group) in &groups {
        let (ratio, kl, js) = (
            per_layer(group, "ratio"),
            per_layer(group, "kl"),
            per_layer(group, "js"),
        );
        for layer in 0..ratio.len() {
            let _ = writeln!(
                csv,
                "{modality},{layer},{},{},{},{},{},{},{}",
                group.len(),
                fmt(mean(&ratio[layer])),
                fmt(median(&ratio[layer])),
                fmt(mean(&kl[layer])),
                fmt(median(&kl[layer])),
                fmt(mean(&js[layer])),
                fmt(median(&js[layer]))
            );
        }
        curves.push((modality.clone(), ratio.iter().map(|c| mean(c)).collect()));
    }
    crate::io::write_bytes(&out.join("per_layer.csv"), csv.as_bytes())?;
    let heads = head_means(&records);
    let mut csv = String::from("layer,head,n,ratio_mean,ratio_median,kl_mean,js_mean\n");
    for l in 0..heads.layers {
        for h in 0..heads.heads {
            let _ = writeln!(
                csv,
                "{l},{h},{},{},{},{},{}",
                heads.samples,
                fmt(heads.ratio[l][h]),
                fmt(heads.ratio_median[l][h]),
                fmt(heads.kl[l][h]),
                fmt(heads.js[l][h])
            );
        }
    }
    crate::io::write_bytes(&out.join("per_head.csv"), csv.as_bytes())?;
    let summary = json!({
        "samples": records.len(),
        "usable": usable.len(),
        "skipped": records.iter().filter(|r| r.get("error").is_some()).map(|r| json!({"index": r["index"], "error": r["error"]})).collect::<Vec<_>>(),
        "per_layer_ratio_mean": curves.iter().map(|(m, c)| (m.clone(), json!(c))).collect::<serde_json::Map<_, _>>(),
    });
    crate::io::write_json(&out.join("summary.json"), &summary)?;
    if heads.layers > 0 {
        let layers = curves.iter().map(|(_, c)| c.len()).max().unwrap_or(1);
        let xs: Vec<f64> = (0..layers).map(|l| l as f64).collect();
        plot_curves(
            &out.join("per_layer_ratio.png"),
            &Axes {
                title: "Attention ratio per layer (head mean, relative to the general prompt)",
                x: "layer",
                y: "attention ratio",
                reference: Some(1.0),
                integer_x: true,
            },
            &xs,
            &curves,
        )?;
        plot_head_heatmap(
            &out.join("heads_ratio.png"),
            &heads.ratio,
            "Mean attention ratio per head",
        )?;
    }
    eprintln!(
        "grounding: {} of {} samples usable; wrote {}",
        usable.len(),
        records.len(),
        out.display()
    );
    Ok(())
}

/// Write summary.csv / summary.json of an eval run and print the table.
/// `fovea faithfulness`'s tables and plot from `samples.jsonl`: per group (all, dataset,
/// modality, and "yes" vs other answers) the mean AUC in the map's order and in random orders,
/// and how many curves fall below random; the mean curves over all samples.
pub fn faithfulness_report(out: &Path) -> Result<()> {
    let records = read_records(&out.join("samples.jsonl"))?;
    let ok: Vec<&Value> = records.iter().filter(|r| r.get("auc").is_some()).collect();
    let mut tables: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
    for record in &ok {
        let answer = record["answer"]
            .as_str()
            .unwrap_or("")
            .trim()
            .to_lowercase();
        let mut keys = group_keys(record);
        let kind = if answer.starts_with("yes") {
            "yes"
        } else {
            "other"
        };
        keys.push(("answer".to_string(), kind.to_string()));
        for key in keys {
            tables.entry(key).or_default().push(record);
        }
    }
    let mut csv = String::from("group,name,n,auc,random_auc,ratio,below_random\n");
    let mut text = String::from("group     name                 n     AUC  random  ratio  below\n");
    let mut rows = Vec::new();
    for ((group, name), group_records) in &tables {
        let auc = mean(
            &group_records
                .iter()
                .map(|r| r["auc"].as_f64().unwrap_or(f64::NAN))
                .collect::<Vec<_>>(),
        );
        let random = mean(
            &group_records
                .iter()
                .map(|r| r["random_auc"].as_f64().unwrap_or(f64::NAN))
                .collect::<Vec<_>>(),
        );
        let below = group_records
            .iter()
            .filter(|r| r["auc"].as_f64() < r["random_auc"].as_f64())
            .count();
        let n = group_records.len();
        let _ = writeln!(
            csv,
            "{group},{name},{n},{auc:.4},{random:.4},{:.4},{below}",
            auc / random
        );
        let _ = writeln!(
            text,
            "{group:<9} {name:<18} {n:>4}  {auc:>6.3}  {random:>6.3}  {:>5.2}  {below:>3}/{n}",
            auc / random
        );
        rows.push(json!({"group": group, "name": name, "n": n, "auc": auc, "random_auc": random, "below_random": below}));
    }
    crate::io::write_bytes(&out.join("summary.csv"), csv.as_bytes())?;
    crate::io::write_json(
        &out.join("summary.json"),
        &json!({ "samples": records.len(), "errors": records.len() - ok.len(), "tables": rows }),
    )?;
    if let Some(first) = ok.first() {
        let xs = numbers(&first["fractions"]);
        let mean_curve = |key: &str| -> Vec<f64> {
            (0..xs.len())
                .map(|i| {
                    mean(
                        &ok.iter()
                            .map(|r| numbers(&r[key]).get(i).copied().unwrap_or(f64::NAN))
                            .collect::<Vec<_>>(),
                    )
                })
                .collect()
        };
        plot_curves(
            &out.join("faithfulness.png"),
            &Axes {
                title: "Probability of the first answer token as image tokens are knocked out",
                x: "fraction of image tokens knocked out",
                y: "probability (mean over samples)",
                reference: None,
                integer_x: false,
            },
            &xs,
            &[
                (
                    format!("{} order", first["order"].as_str().unwrap_or("map")),
                    mean_curve("prob"),
                ),
                ("random order".to_string(), mean_curve("random_mean")),
            ],
        )?;
    }
    eprint!("{text}");
    Ok(())
}

/// The table rows a record counts in: all, its dataset, its modality.
fn group_keys(record: &Value) -> Vec<(String, String)> {
    vec![
        ("all".to_string(), "all".to_string()),
        (
            "dataset".to_string(),
            record["dataset"].as_str().unwrap_or("?").to_string(),
        ),
        (
            "modality".to_string(),
            record["modality"].as_str().unwrap_or("?").to_string(),
        ),
    ]
}

pub fn eval_report(out: &Path) -> Result<()> {
    let records = read_records(&out.join("samples.jsonl"))?;
    #[derive(Default)]
    struct Tally {
        n: usize,
        plain: usize,
        refined: usize,
        refined_n: usize,
    }
    let mut tables: BTreeMap<(String, String), Tally> = BTreeMap::new();
    for record in records.iter().filter(|r| r.get("plain").is_some()) {
        let keys = group_keys(record);
        for key in keys {
            let tally = tables.entry(key).or_default();
            tally.n += 1;
            tally.plain += usize::from(record["plain"]["correct"].as_bool().unwrap_or(false));
            if let Some(correct) = record.get("vgrefine").and_then(|v| v["correct"].as_bool()) {
                tally.refined_n += 1;
                tally.refined += usize::from(correct);
            }
        }
    }
    let mut csv = String::from("group,name,n,accuracy,accuracy_vgrefine\n");
    let mut text = String::from("group     name                 n   plain   VGRefine\n");
    let mut rows = Vec::new();
    for ((group, name), tally) in &tables {
        let plain = tally.plain as f64 / tally.n.max(1) as f64;
        let refined = (tally.refined_n > 0).then(|| tally.refined as f64 / tally.refined_n as f64);
        let _ = writeln!(
            csv,
            "{group},{name},{},{plain:.4},{}",
            tally.n,
            refined.map(|r| format!("{r:.4}")).unwrap_or_default()
        );
        let _ = writeln!(
            text,
            "{group:<9} {name:<18} {:>4}  {:>5.1}%  {}",
            tally.n,
            plain * 100.0,
            refined
                .map(|r| format!("{:>6.1}%", r * 100.0))
                .unwrap_or_else(|| "     -".into())
        );
        rows.push(json!({"group": group, "name": name, "n": tally.n, "accuracy": plain, "accuracy_vgrefine": refined}));
    }
    crate::io::write_bytes(&out.join("summary.csv"), csv.as_bytes())?;
    crate::io::write_json(
        &out.join("summary.json"),
        &json!({ "samples": records.len(), "errors": records.iter().filter(|r| r.get("error").is_some()).count(), "tables": rows }),
    )?;
    eprint!("{text}");
    Ok(())
}

fn font() {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            plotters::style::FontStyle::Normal,
            epaint_default_fonts::UBUNTU_LIGHT,
        );
    });
}

/// What a line plot's axes say.
struct Axes<'a> {
    title: &'a str,
    x: &'a str,
    y: &'a str,
    /// A grey horizontal line at this value (1 = uniform attention ratio).
    reference: Option<f64>,
    /// Label the x axis with integers (layers).
    integer_x: bool,
}

/// Curves over the points `xs`, one colour each, with a legend.
fn plot_curves(path: &Path, axes: &Axes, xs: &[f64], curves: &[(String, Vec<f64>)]) -> Result<()> {
    use plotters::prelude::*;
    font();
    let x_max = xs
        .last()
        .copied()
        .unwrap_or(1.0)
        .max(xs.first().copied().unwrap_or(0.0) + 1e-9);
    let x_min = xs.first().copied().unwrap_or(0.0);
    let max = curves
        .iter()
        .flat_map(|(_, c)| c.iter().copied())
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max);
    let mut buffer = vec![0u8; 900 * 520 * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (900, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(axes.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x_min..x_max, 0f64..max * 1.1)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let integer = |v: &f64| format!("{v:.0}");
        let decimal = |v: &f64| format!("{v:.2}");
        chart
            .configure_mesh()
            .x_desc(axes.x)
            .y_desc(axes.y)
            .x_labels(if axes.integer_x {
                xs.len().clamp(2, 30)
            } else {
                11
            })
            .x_label_formatter(if axes.integer_x { &integer } else { &decimal })
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let palette = [
            BLACK,
            RGBColor(220, 50, 47),
            RGBColor(38, 139, 210),
            RGBColor(133, 153, 0),
            RGBColor(211, 54, 130),
        ];
        for (index, (name, curve)) in curves.iter().enumerate() {
            let colour = palette[index % palette.len()];
            chart
                .draw_series(LineSeries::new(
                    xs.iter()
                        .zip(curve)
                        .filter(|(_, v)| v.is_finite())
                        .map(|(&x, &v)| (x, v)),
                    colour.stroke_width(2),
                ))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
        }
        if let Some(level) = axes.reference {
            chart
                .draw_series(LineSeries::new(
                    [(x_min, level), (x_max, level)],
                    RGBColor(150, 150, 150),
                ))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let image = image::RgbImage::from_raw(900, 520, buffer).context("plot buffer")?;
    crate::io::write_png(path, &image)
}

pub(super) fn plot_head_heatmap(path: &Path, ratio: &[Vec<f64>], title: &str) -> Result<()> {
    use plotters::prelude::*;
    font();
    let layers = ratio.len();
    let heads = ratio.first().map(|r| r.len()).unwrap_or(1);
    let finite: Vec<f64> = ratio
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    let (lo, hi) = (
        finite.iter().copied().fold(f64::INFINITY, f64::min),
        finite.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let (width, height) = (900u32, 120 + 28 * layers.clamp(4, 30) as u32);
    let mut buffer = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{title} ({lo:.2} .. {hi:.2})"), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..heads as f64, 0f64..layers as f64)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("head")
            .y_desc("layer")
            .x_labels(heads.clamp(2, 32) + 1)
            .y_labels(layers.clamp(2, 32) + 1)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let cells = (0..layers)
            .flat_map(|l| (0..heads).map(move |h| (l, h)))
            .map(|(l, h)| {
                let value = ratio[l][h];
                let t = if value.is_finite() && hi > lo {
                    ((value - lo) / (hi - lo)) as f32
                } else {
                    0.0
                };
                let [r, g, b] = crate::case::compose::Colormap::Inferno.color(t);
                Rectangle::new(
                    [(h as f64, l as f64), (h as f64 + 1.0, l as f64 + 1.0)],
                    RGBColor((r * 255.0) as u8, (g * 255.0) as u8, (b * 255.0) as u8).filled(),
                )
            });
        chart
            .draw_series(cells)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let image = image::RgbImage::from_raw(width, height, buffer).context("plot buffer")?;
    crate::io::write_png(path, &image)
}
