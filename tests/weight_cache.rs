//! The weight cache as a user meets it: the first q8_0 load quantizes and writes the cache, a
//! second load reads it and answers bit for bit as a load that quantizes (first-token logits,
//! every head's map, the generated ids); a corrupt, truncated or stale cache is noticed, never
//! used, and written again; a changed checkpoint gets a cache of its own, which replaces the old
//! one.

use std::path::{Path, PathBuf};

use candle_core::Device;
use fovea::demo::{generate, Recipe};
use fovea::model::linear::Quantize;
use fovea::model::{Answer, ImageSession, Model, RunOptions};

mod common;
use common::copy_dir;

fn load(dir: &Path, cache: Option<&Path>) -> Model {
    Model::load_with_cache(dir, None, &Device::Cpu, Quantize::Q8_0, None, cache).unwrap()
}

/// Two questions on two phantoms: everything a case reads from the model.
fn answers(model: &Model) -> Vec<Answer> {
    let mut out = Vec::new();
    for seed in [9_900_001u64, 9_900_002] {
        let case = generate(seed, &Recipe::default());
        let rgb = image::DynamicImage::ImageLuma8(case.image.clone()).to_rgb8();
        let mut session = ImageSession::new(model, &rgb).unwrap();
        for qa in case.questions().iter().take(2) {
            let prompt = session.prompt(&qa.question, false).unwrap();
            let options = RunOptions {
                max_new_tokens: 3,
                ..RunOptions::default()
            };
            out.push(session.run(&prompt, &options).unwrap());
        }
    }
    out
}

fn assert_identical(a: &[Answer], b: &[Answer], what: &str) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.ids, y.ids, "{what}: generated ids");
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&x.first_token_logits),
            bits(&y.first_token_logits),
            "{what}: first-token logits"
        );
        for (layer_x, layer_y) in x.attention.iter().zip(&y.attention) {
            assert_eq!(bits(layer_x), bits(layer_y), "{what}: attention maps");
        }
    }
}

fn cache_files(cache: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(cache.join("weights"))
        .map(|listing| listing.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn notes_with(model: &Model, text: &str) -> usize {
    model.load_notes.iter().filter(|n| n.contains(text)).count()
}

/// Where fovea's packed kernels do not run (ARM, as tools/cross.sh test arm runs these tests):
/// a cache folder writes nothing, and the load says why. True when it was so.
fn no_cache_here(dir: &Path, cache: &Path) -> bool {
    if fovea::model::gemm::from_tensors::own_kernels(&Device::Cpu) {
        return false;
    }
    let model = load(dir, Some(cache));
    assert_eq!(
        notes_with(&model, fovea::model::loaded::NO_CACHE_HERE),
        1,
        "{:?}",
        model.load_notes
    );
    assert!(cache_files(cache).is_empty(), "{:?}", cache_files(cache));
    true
}

/// `fovea quantize` at the portable tier (candle's kernels, as on ARM) refuses in one line
/// saying why, and writes no cache.
#[test]
fn quantize_refuses_where_there_is_nothing_to_cache() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    let run = common::fovea_command()
        .env("FOVEA_CPU", "portable")
        .arg("quantize")
        .arg(fovea::demo::demo_model_dir())
        .arg("--cache-dir")
        .arg(&cache)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no weight cache on this CPU") && stderr.contains("portable"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(cache_files(&cache).is_empty());
}

#[test]
fn a_second_load_reads_the_cache_and_answers_bit_for_bit() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("demo-model");
    copy_dir(&fovea::demo::demo_model_dir(), &dir);
    let cache = root.path().join("cache");
    if no_cache_here(&dir, &cache) {
        return;
    }

    let reference = answers(&load(&dir, None));
    assert!(
        cache_files(&cache).is_empty(),
        "no cache without a cache dir"
    );

    let first = load(&dir, Some(&cache));
    assert_eq!(
        notes_with(&first, "wrote the weight cache"),
        1,
        "{:?}",
        first.load_notes
    );
    let files = cache_files(&cache);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_identical(
        &reference,
        &answers(&first),
        "the load that wrote the cache",
    );

    let second = load(&dir, Some(&cache));
    assert_eq!(
        notes_with(&second, "from the weight cache"),
        1,
        "{:?}",
        second.load_notes
    );
    assert_eq!(notes_with(&second, "wrote"), 0, "{:?}", second.load_notes);
    assert_identical(&reference, &answers(&second), "the load from the cache");
    // The models map the file; they go before it is damaged below.
    drop((first, second));

    // One flipped byte in the data: the checksum says so, the cache is rebuilt, answers stay.
    let file = &files[0];
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x5a;
    std::fs::write(file, &bytes).unwrap();
    let repaired = load(&dir, Some(&cache));
    assert_eq!(
        notes_with(&repaired, "checksum"),
        1,
        "{:?}",
        repaired.load_notes
    );
    assert_eq!(notes_with(&repaired, "wrote the weight cache"), 1);
    assert_identical(&reference, &answers(&repaired), "after a corrupt cache");
    drop(repaired);
    assert_eq!(
        notes_with(&load(&dir, Some(&cache)), "from the weight cache"),
        1
    );

    // Truncated (a disk filled while writing elsewhere, a copy cut short): noticed, rebuilt.
    let bytes = std::fs::read(file).unwrap();
    std::fs::write(file, &bytes[..bytes.len() / 2]).unwrap();
    let rebuilt = load(&dir, Some(&cache));
    assert_eq!(
        notes_with(&rebuilt, "not usable"),
        1,
        "{:?}",
        rebuilt.load_notes
    );
    assert_identical(&reference, &answers(&rebuilt), "after a truncated cache");
    assert_eq!(cache_files(&cache).len(), 1);
}

#[test]
fn a_changed_checkpoint_gets_its_own_cache() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("demo-model");
    copy_dir(&fovea::demo::demo_model_dir(), &dir);
    let cache = root.path().join("cache");
    if no_cache_here(&dir, &cache) {
        return;
    }
    load(&dir, Some(&cache));
    let before = cache_files(&cache);
    assert_eq!(before.len(), 1);

    // Other weights of the same shapes: the sign of every f32 in the last quarter of
    // model.safetensors flipped (tensor data; the header, shapes and names stay).
    let weights = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let start = bytes.len() * 3 / 4;
    for (i, byte) in bytes[start..].iter_mut().enumerate() {
        if i % 4 == 3 {
            *byte ^= 0x80;
        }
    }
    std::fs::write(&weights, &bytes).unwrap();
    let reference = answers(&load(&dir, None));
    let changed = load(&dir, Some(&cache));
    assert_eq!(
        notes_with(&changed, "wrote the weight cache"),
        1,
        "{:?}",
        changed.load_notes
    );
    assert_eq!(notes_with(&changed, "from the weight cache"), 0);
    let after = cache_files(&cache);
    assert_eq!(after.len(), 1, "the old cache is removed: {after:?}");
    assert_ne!(after, before);
    assert_identical(&reference, &answers(&changed), "the changed checkpoint");
}
