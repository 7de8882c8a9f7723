//! Which device models run on: the CPU, unless `FOVEA_DEVICE` says `cuda`, `cuda:N` or
//! `metal` (and fovea was built with `--features cuda` / `metal`). On a GPU, candle multiplies
//! (bf16 as stored, q8_0/q4k through its `QMatMul`); fovea's own kernels are the CPU's.

use anyhow::{bail, Context, Result};
use candle_core::Device;

/// The device `FOVEA_DEVICE` names (unset or empty: the CPU).
pub fn from_env() -> Result<Device> {
    parse(std::env::var("FOVEA_DEVICE").ok().as_deref())
}

/// The device a `FOVEA_DEVICE` value names.
pub fn parse(text: Option<&str>) -> Result<Device> {
    let text = text.map(str::trim).unwrap_or("");
    match text {
        "" | "cpu" => Ok(Device::Cpu),
        "metal" => {
            if !candle_core::utils::metal_is_available() {
                bail!("FOVEA_DEVICE=metal: this fovea was built without Metal (cargo build --release --features metal)")
            }
            Device::new_metal(0).context("FOVEA_DEVICE=metal: cannot open the Metal device")
        }
        _ if text == "cuda" || text.starts_with("cuda:") => {
            let ordinal = match text.strip_prefix("cuda:") {
                Some(n) => n.parse::<usize>().with_context(|| {
                    format!("FOVEA_DEVICE={text}: the GPU number after cuda: is not a number")
                })?,
                None => 0,
            };
            if !candle_core::utils::cuda_is_available() {
                bail!("FOVEA_DEVICE={text}: this fovea was built without CUDA (cargo build --release --features cuda)")
            }
            Device::new_cuda(ordinal)
                .with_context(|| format!("FOVEA_DEVICE={text}: cannot open CUDA device {ordinal}"))
        }
        other => bail!("FOVEA_DEVICE={other:?}: use cpu, cuda, cuda:N or metal"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_parsed_and_bad_ones_refused() {
        assert!(parse(None).unwrap().is_cpu());
        assert!(parse(Some(" cpu ")).unwrap().is_cpu());
        let err = parse(Some("tpu")).unwrap_err().to_string();
        assert!(err.contains("use cpu, cuda, cuda:N or metal"), "{err}");
        let err = format!("{:#}", parse(Some("cuda:x")).unwrap_err());
        assert!(err.contains("not a number"), "{err}");
        if !candle_core::utils::cuda_is_available() {
            let err = parse(Some("cuda")).unwrap_err().to_string();
            assert!(err.contains("built without CUDA"), "{err}");
        }
    }
}
