//! The command line's side of folders and DICOMDIRs (`--series`, `--slice`, `fovea info
//! FOLDER`) and of DICOM exchange (`--regions-from`, `--seg`, `--capture`).

use std::path::Path;

use anyhow::{bail, Result};

use super::args::{InfoArgs, InspectArgs, SeriesArgs};
use crate::imaging;

/// The file and frame to open: `path` itself, or for a folder / DICOMDIR the chosen slice of
/// the chosen series (an error lists the series or the slice range when a choice is missing),
/// with the slice's distance to its nearest neighbour when the series is ordered by position.
pub fn resolve_image(
    path: &Path,
    frame: usize,
    choice: &SeriesArgs,
) -> Result<(std::path::PathBuf, usize, Option<f64>)> {
    if !imaging::scan::is_series_source(path) {
        if choice.series.is_some() || choice.slice.is_some() {
            bail!(
                "--series and --slice need a folder or a DICOMDIR; this is one file: {}",
                path.display()
            );
        }
        return Ok((path.to_path_buf(), frame, None));
    }
    let scan = imaging::scan::scan(path, &imaging::scan::ScanProgress::default())?;
    let series = match &choice.series {
        Some(series) => series.clone(),
        None if scan.series.len() == 1 => "0".into(),
        None => bail!(
            "{} holds {} series: choose one with --series N\n{}",
            path.display(),
            scan.series.len(),
            series_list(&scan)
        ),
    };
    let (chosen, _) = imaging::scan::pick(&scan, &series, 0).map_err(anyhow::Error::msg)?;
    let slice = match choice.slice {
        Some(slice) => slice,
        None if chosen.slices.len() == 1 => 0,
        None => bail!(
            "series {series} has {} slices: choose one with --slice K (0..{}, along the slice normal)",
            chosen.slices.len(),
            chosen.slices.len() - 1
        ),
    };
    let (chosen, header) =
        imaging::scan::pick(&scan, &series, slice).map_err(anyhow::Error::msg)?;
    Ok((
        header.path.clone(),
        header.frame,
        chosen.slice_spacing_mm(slice),
    ))
}

fn series_list(scan: &imaging::scan::Scan) -> String {
    let mut text = String::new();
    for (index, series) in scan.series.iter().enumerate() {
        if scan.starts_study(index) {
            text.push_str(&format!("  study {}:\n", series.study + 1));
        }
        text.push_str(&format!("  [{index}] {}\n", series.label()));
    }
    if !scan.skipped.is_empty() {
        text.push_str(&format!(
            "  ({} file(s) passed over: not DICOM images)\n",
            scan.skipped.len()
        ));
    }
    text
}

/// `fovea info FOLDER [--series N]`: the series, and a series' slices in order.
pub fn info_folder(args: &InfoArgs) -> Result<()> {
    let scan = imaging::scan::scan(&args.file, &imaging::scan::ScanProgress::default())?;
    if args.json {
        let series: Vec<serde_json::Value> = scan
            .series
            .iter()
            .map(|s| {
                serde_json::json!({
                    "study": s.study,
                    "modality": s.modality,
                    "series_number": s.series_number,
                    "description": s.description,
                    "slices": s.slices.len(),
                    "rows": s.rows,
                    "columns": s.columns,
                    "ordering": format!("{:?}", s.ordering),
                    "series_instance_uid": args.show_phi.then_some(&s.series_uid),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "series": series,
                "skipped_files": scan.skipped.len(),
            }))?
        );
        return Ok(());
    }
    println!("{}: {} series", args.file.display(), scan.series.len());
    print!("{}", series_list(&scan));
    if let Some(chosen) = &args.series.series {
        let (series, _) = imaging::scan::pick(&scan, chosen, 0).map_err(anyhow::Error::msg)?;
        for (k, slice) in series.slices.iter().enumerate() {
            let position = slice
                .position
                .map(|p| format!("({:.1}, {:.1}, {:.1}) mm", p[0], p[1], p[2]))
                .unwrap_or_else(|| "no position".into());
            println!(
                "  slice {k}: {} frame {}, {position}",
                slice.path.display(),
                slice.frame
            );
        }
    }
    Ok(())
}

/// `--seg` and `--capture`: DICOM objects referencing the source image, one identity policy
/// (and one UID remapping) for both.
pub fn dicom_exports(
    args: &InspectArgs,
    inspection: &crate::case::Inspection,
    named: &[(String, bool, crate::grounding::region::Region)],
    image: &Path,
    frame: usize,
) -> Result<()> {
    use crate::exchange::{self, segments};
    let source = exchange::SourceImage::read(image, frame)?;
    let mut exporter = exchange::Exporter::new(if args.keep_identity {
        exchange::IdentityChoice::Keep
    } else {
        exchange::IdentityChoice::Deidentify
    });
    let identity = if args.keep_identity {
        "patient identity kept"
    } else {
        "de-identified (PS3.15 Basic Profile)"
    };
    if let Some(out) = &args.seg {
        let drawn: Vec<segments::DrawnRegion> = named
            .iter()
            .map(|(name, distractor, region)| segments::DrawnRegion {
                name,
                distractor: *distractor,
                region,
            })
            .collect();
        let masked: Vec<usize> = inspection.record["knockout"]["layers"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|l| l.as_u64())
                    .map(|l| l as usize)
                    .collect()
            })
            .unwrap_or_default();
        let maps = segments::CaseMaps::of(
            &inspection.grid,
            &inspection.outcome,
            &inspection.triage_heads,
            &masked,
        );
        let list = segments::case_segments(
            source.columns,
            source.rows,
            &drawn,
            Some(&maps),
            args.seg_map_threshold,
        );
        exchange::seg::write(out, &source, &list, &mut exporter)?;
        eprintln!(
            "wrote {} (DICOM SEG, {} segment(s), {identity})",
            out.display(),
            list.len()
        );
    }
    if let Some(out) = &args.capture {
        let picture = crate::case::overlay_picture(
            inspection,
            crate::case::compose::Colormap::Inferno,
            args.overlay_token,
        )?;
        let description = format!(
            "fovea attention view (triage map | before | after knockout): answer {:?}, VGRefine answer {:?}",
            inspection.record["answer"].as_str().unwrap_or(""),
            inspection.record["refined"]["answer"]
                .as_str()
                .unwrap_or("")
        );
        exchange::capture::write(out, &source, &picture, &description, &mut exporter)?;
        eprintln!(
            "wrote {} (DICOM Secondary Capture, {identity})",
            out.display()
        );
    }
    Ok(())
}
