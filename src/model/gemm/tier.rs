//! Which CPU tier the kernels run at: the best this CPU has, or the one `FOVEA_CPU` names, so a
//! machine with AMX or AVX-512 can measure what a laptop with AVX2 only gets, in the same run
//! and on the same memory. A tier the CPU lacks is refused, never emulated.
//!
//! Tiers, fastest first:
//! - `amx`: prefills of 32 rows or more on the AMX tiles (Sapphire Rapids and later), the rest
//!   on AVX-512 VNNI;
//! - `avx512-vnni`: int8 products with `vpdpbusd` on 512-bit registers, bf16/f16 through
//!   AVX-512 FMA (Ice Lake and later Xeons, Zen 4 and 5);
//! - `avx2`: `vpmaddubsw` + `vpmaddwd`, AVX2 FMA (every x86-64 laptop of the last ten years);
//! - `portable`: plain Rust (other CPUs; on ARM this is what runs).
//!
//! `avx-vnni` (the 256-bit VEX form Intel laptops since Alder Lake have) is named so that
//! `FOVEA_CPU=avx-vnni` gets a clear refusal rather than a silent other tier: it has no kernel
//! of its own yet.

use std::sync::OnceLock;

/// A kernel tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    Portable,
    Avx2,
    AvxVnni,
    Avx512Vnni,
    Amx,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Amx => "amx",
            Tier::Avx512Vnni => "avx512-vnni",
            Tier::AvxVnni => "avx-vnni",
            Tier::Avx2 => "avx2",
            Tier::Portable => "portable",
        }
    }

    fn parse(text: &str) -> Option<Tier> {
        [
            Tier::Amx,
            Tier::Avx512Vnni,
            Tier::AvxVnni,
            Tier::Avx2,
            Tier::Portable,
        ]
        .into_iter()
        .find(|t| t.name() == text.trim().to_ascii_lowercase())
    }
}

/// What this CPU can run, from its feature flags (AMX also needs the OS's permission).
pub fn detected() -> Vec<Tier> {
    let mut tiers = vec![Tier::Portable];
    #[cfg(target_arch = "x86_64")]
    {
        let f16c_fma = is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
        if f16c_fma && is_x86_feature_detected!("avx2") {
            tiers.push(Tier::Avx2);
        }
        let avx512 = f16c_fma
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni");
        if avx512 {
            tiers.push(Tier::Avx512Vnni);
        }
        if avx512 && amx_supported() {
            tiers.push(Tier::Amx);
        }
    }
    tiers
}

/// The tier the kernels run at: `FOVEA_CPU` when set (and runnable here), else the best this CPU
/// has. An unknown or unrunnable `FOVEA_CPU` is an error naming what this CPU can run.
pub fn chosen() -> Result<Tier, String> {
    static CHOSEN: OnceLock<Result<Tier, String>> = OnceLock::new();
    CHOSEN
        .get_or_init(|| {
            let here = detected();
            let best = here.iter().copied().max().unwrap_or(Tier::Portable);
            let Some(asked) = std::env::var_os("FOVEA_CPU") else {
                return Ok(best);
            };
            let asked = asked.to_string_lossy().to_string();
            let names = here.iter().rev().map(|t| t.name()).collect::<Vec<_>>().join(", ");
            match Tier::parse(&asked) {
                Some(Tier::AvxVnni) => Err(format!(
                    "FOVEA_CPU=avx-vnni: fovea has no AVX-VNNI kernel yet; this CPU runs {names}"
                )),
                Some(tier) if here.contains(&tier) => Ok(tier),
                Some(tier) => Err(format!(
                    "FOVEA_CPU={}: this CPU cannot run it; it runs {names}",
                    tier.name()
                )),
                None => Err(format!(
                    "FOVEA_CPU={asked:?} is not a tier: use amx, avx512-vnni, avx2 or portable (this CPU runs {names})"
                )),
            }
        })
        .clone()
}

/// The tier to run at, falling back to the best detected when `FOVEA_CPU` is invalid (callers
/// that can report errors check [`chosen`] first, at load).
pub fn current() -> Tier {
    chosen().unwrap_or_else(|_| detected().into_iter().max().unwrap_or(Tier::Portable))
}

/// Whether this CPU and OS run AMX-BF16 (`FOVEA_NO_AMX` says no).
fn amx_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        if std::env::var_os("FOVEA_NO_AMX").is_some() {
            return false;
        }
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            // CPUID.(7, 0):EDX bit 22 AMX-BF16, bit 24 AMX-TILE.
            #[allow(unused_unsafe)]
            // SAFETY: CPUID leaf 7 exists on every x86-64 CPU that runs this binary.
            let edx = unsafe { std::arch::x86_64::__cpuid_count(7, 0) }.edx;
            if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 {
                return false;
            }
            // The dequantizing path rounds with AVX512-BF16 (every AMX CPU has it).
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512bf16")
                && is_x86_feature_detected!("f16c")
                && request_tile_state()
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        {
            false
        }
    })
}

/// Ask Linux for the AMX tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_state() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let result: i64;
    // SAFETY: a plain system call; it only changes this process's permission to use AMX.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => result,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    result == 0
}
