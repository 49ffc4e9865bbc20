//! The instruction-set path of the kernels, chosen once per process: `avx512` (AVX-512F),
//! `avx2` (AVX2 + FMA) or `portable` (plain Rust, any CPU). The widest one the CPU has, unless
//! `RBLN_NPU_ISA` names another (for tests and A/B measurements); a path the CPU lacks is
//! refused with an error that the runtime returns when it loads or compiles a model.
//!
//! Every kernel reads [`path`] once at its entry, on the calling thread, and dispatches on it
//! with a `match`; its parallel parts run the chosen code. Holding a [`Path`] proves that the
//! CPU has its features (the only constructor, [`Isa::check`], detects them), which is what
//! the kernels' `unsafe` calls of `#[target_feature]` functions rely on.

use std::cell::Cell;
use std::fmt;
use std::sync::OnceLock;

/// The environment variable that forces a path (read once).
pub const ENV: &str = "RBLN_NPU_ISA";

/// An instruction-set path of the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// 512-bit kernels: AVX-512F.
    Avx512,
    /// 256-bit kernels: AVX2 and FMA.
    Avx2,
    /// Plain Rust (whatever the compiler vectorizes for the build's baseline target).
    Portable,
}

impl Isa {
    /// Every path, widest first.
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Portable];

    /// The name `RBLN_NPU_ISA` takes.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// The CPU features the path needs, as `lscpu` spells them.
    pub fn features(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512f",
            Isa::Avx2 => "avx2 fma",
            Isa::Portable => "none",
        }
    }

    /// The path named `s` (see [`Isa::name`]).
    pub fn parse(s: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name() == s.trim())
    }

    /// Whether this CPU has the path's features (detected at run time).
    pub fn supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// This path, if the CPU has it.
    pub fn check(self) -> Result<Path, IsaError> {
        if self.supported() {
            Ok(Path(self))
        } else {
            Err(IsaError::Unsupported {
                isa: self,
                best: best().0,
            })
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A path this CPU can run (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Path(Isa);

impl Path {
    /// The instruction set.
    pub fn isa(self) -> Isa {
        self.0
    }
}

/// Why a requested path cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsaError {
    /// `RBLN_NPU_ISA` names no path.
    #[error("{ENV}={value:?} names no kernel path (expected avx512, avx2 or portable)")]
    Unknown {
        /// The variable's value.
        value: String,
    },
    /// The CPU lacks the requested path's features.
    #[error(
        "kernel path {isa} needs CPU features this CPU lacks ({}); the widest it has is {best}",
        isa.features()
    )]
    Unsupported {
        /// The requested path.
        isa: Isa,
        /// The widest path the CPU has.
        best: Isa,
    },
}

/// The widest path this CPU has.
pub fn best() -> Path {
    Isa::ALL
        .into_iter()
        .find_map(|i| i.check().ok())
        .unwrap_or(Path(Isa::Portable))
}

/// The start-up choice: `RBLN_NPU_ISA`'s path if set (an error if the CPU lacks it or the name
/// is unknown), else [`best`]. Read and detected once per process.
pub fn selected() -> Result<Path, IsaError> {
    static CHOICE: OnceLock<Result<Path, IsaError>> = OnceLock::new();
    CHOICE
        .get_or_init(|| match std::env::var(ENV) {
            Ok(v) if !v.trim().is_empty() => match Isa::parse(&v) {
                Some(isa) => isa.check(),
                None => Err(IsaError::Unknown { value: v }),
            },
            _ => Ok(best()),
        })
        .clone()
}

/// Whether the start-up choice came from `RBLN_NPU_ISA`.
pub fn forced() -> bool {
    std::env::var(ENV).is_ok_and(|v| !v.trim().is_empty())
}

thread_local! {
    static OVERRIDE: Cell<Option<Path>> = const { Cell::new(None) };
}

/// The path kernels called on this thread run: the innermost [`with_path`] override, else
/// [`selected`] (else, when `RBLN_NPU_ISA` is invalid, which the runtime refuses before it runs
/// anything, [`best`]).
pub fn path() -> Path {
    OVERRIDE
        .with(Cell::get)
        .unwrap_or_else(|| selected().unwrap_or_else(|_| best()))
}

/// Runs `f` with the kernels it calls on this thread (and their parallel parts) on `path`,
/// e.g. to test or time every path in one process.
pub fn with_path<R>(path: Path, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Path>);
    impl Drop for Restore {
        fn drop(&mut self) {
            OVERRIDE.with(|o| o.set(self.0));
        }
    }
    let _restore = Restore(OVERRIDE.with(|o| o.replace(Some(path))));
    f()
}

/// Whether `path` multiplies bfloat16 pairs in hardware (`vdpbf16ps`): the `avx512` path on a
/// CPU that also has AVX512_BF16 (detected once).
pub fn bf16_dot(path: Path) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: OnceLock<bool> = OnceLock::new();
        path.0 == Isa::Avx512 && *HAS.get_or_init(|| is_x86_feature_detected!("avx512bf16"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = path;
        false
    }
}

/// The selected path, or the plugin error saying why `RBLN_NPU_ISA` cannot be honored (checked
/// before compiling or loading anything).
pub fn checked() -> Result<Path, plugin_api::PluginError> {
    selected().map_err(|e| plugin_api::PluginError::unsupported(format!("rbln-npu: {e}")))
}

/// One line for descriptions: the path, whether it was forced, and the CPU's widest.
pub fn describe() -> String {
    match selected() {
        Ok(p) if forced() => format!(
            "{} (forced by {ENV}; widest on this CPU: {})",
            p.0,
            best().0
        ),
        Ok(p) => format!("{} (widest on this CPU; {ENV} forces another)", p.0),
        Err(e) => format!("none: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for isa in Isa::ALL {
            assert_eq!(Isa::parse(isa.name()), Some(isa));
        }
        assert_eq!(Isa::parse("sse9"), None);
        assert!(Isa::Portable.check().is_ok());
    }

    #[test]
    fn overrides_nest_and_restore() {
        let outer = path();
        let p = Isa::Portable.check().unwrap();
        with_path(p, || {
            assert_eq!(path(), p);
            with_path(best(), || assert_eq!(path(), best()));
            assert_eq!(path(), p);
        });
        assert_eq!(path(), outer);
    }

    #[test]
    fn a_missing_path_is_an_error_naming_it() {
        for isa in Isa::ALL {
            match isa.check() {
                Ok(p) => assert_eq!(p.isa(), isa),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains(isa.name()) && msg.contains(isa.features()),
                        "{msg}"
                    );
                }
            }
        }
    }
}
