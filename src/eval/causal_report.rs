//! `fovea faithfulness --causal-map`'s dataset report: which layers' and heads' attention agrees
//! with the causal knockout maps (`causal_heads.csv`, `causal_heads.png`, `summary.json`'s
//! `causal`).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde_json::{json, Value};

use super::progress::read_records;
use super::report::{mean, plot_head_heatmap};

/// After `report::faithfulness_report`: when the run's records have causal maps, the per-head
/// ranking, its plot and `summary.json`'s `causal`.
pub(super) fn add_causal_report(out: &Path) -> Result<()> {
    let records = read_records(&out.join("samples.jsonl"))?;
    let ok: Vec<&Value> = records.iter().filter(|r| r.get("auc").is_some()).collect();
    let causal = causal_heads_report(out, &ok)?;
    if causal != Value::Null {
        let mut summary: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json"))?)?;
        summary["causal"] = causal;
        crate::io::write_json(&out.join("summary.json"), &summary)?;
    }
    Ok(())
}

/// Over the records with a causal map: each layer/head's mean Spearman correlation between its
/// attention (pooled to the cells) and the causal map (`causal_heads.csv`, `causal_heads.png`),
/// the triage map's agreement, and how the triage heads rank among all heads. Null when no
/// record has a causal map.
fn causal_heads_report(out: &Path, records: &[&Value]) -> Result<Value> {
    let with: Vec<&Value> = records
        .iter()
        .copied()
        .filter(|r| r["causal"]["agreement_heads"].is_array())
        .collect();
    if with.is_empty() {
        return Ok(Value::Null);
    }
    // [layer][head] -> Spearman values (null ones, constant maps, left out).
    let mut per_head: Vec<Vec<Vec<f64>>> = Vec::new();
    for record in &with {
        for (l, heads) in record["causal"]["agreement_heads"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            for (h, value) in heads.as_array().into_iter().flatten().enumerate() {
                if per_head.len() <= l {
                    per_head.resize(l + 1, Vec::new());
                }
                if per_head[l].len() <= h {
                    per_head[l].resize(h + 1, Vec::new());
                }
                if let Some(v) = value.as_f64() {
                    per_head[l][h].push(v);
                }
            }
        }
    }
    let means: Vec<Vec<f64>> = per_head
        .iter()
        .map(|heads| heads.iter().map(|v| mean(v)).collect())
        .collect();
    let mut ranked: Vec<(usize, usize, f64)> = means
        .iter()
        .enumerate()
        .flat_map(|(l, heads)| heads.iter().enumerate().map(move |(h, &m)| (l, h, m)))
        .filter(|(_, _, m)| m.is_finite())
        .collect();
    ranked.sort_by(|a, b| b.2.total_cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1))));
    let mut csv = String::from("rank,layer,head,n,mean_spearman\n");
    for (rank, &(l, h, m)) in ranked.iter().enumerate() {
        let _ = writeln!(csv, "{},{l},{h},{},{m:.4}", rank + 1, per_head[l][h].len());
    }
    crate::io::write_bytes(&out.join("causal_heads.csv"), csv.as_bytes())?;
    plot_head_heatmap(
        &out.join("causal_heads.png"),
        &means,
        "Mean Spearman of each head's attention with the causal map",
    )?;
    // The triage heads of the records (the same for a run) and where they rank.
    let triage: Vec<(usize, usize)> = with[0]["triage_heads"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p[0].as_u64()? as usize, p[1].as_u64()? as usize)))
        .collect();
    let rank_of = |l: usize, h: usize| {
        ranked
            .iter()
            .position(|r| (r.0, r.1) == (l, h))
            .map(|p| p + 1)
    };
    let triage_ranks: Vec<Value> = triage
        .iter()
        .map(|&(l, h)| json!({"layer": l, "head": h, "rank": rank_of(l, h), "mean_spearman": means.get(l).and_then(|m| m.get(h))}))
        .collect();
    let map_spearman: Vec<f64> = with
        .iter()
        .filter_map(|r| r["causal"]["agreement"]["spearman"].as_f64())
        .collect();
    let hits = with
        .iter()
        .filter(|r| r["causal"]["agreement"]["top_cell_hit"].as_bool() == Some(true))
        .count();
    let best: Vec<Value> = ranked
        .iter()
        .take(10)
        .map(|&(l, h, m)| json!({"layer": l, "head": h, "mean_spearman": m}))
        .collect();
    let summary = json!({
        "samples": with.len(),
        "map_spearman_mean": mean(&map_spearman),
        "map_spearman_samples": map_spearman.len(),
        "top_cell_hits": hits,
        "best_heads": best,
        "triage_heads": triage_ranks,
        "heads_ranked": ranked.len(),
    });
    eprintln!(
        "causal maps: {} samples; the triage map's Spearman with them {:.3} (mean), top cell agrees on {hits}; \
         most agreeing heads: {}",
        with.len(),
        mean(&map_spearman),
        ranked
            .iter()
            .take(5)
            .map(|(l, h, m)| format!("[{l},{h}] {m:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(summary)
}
