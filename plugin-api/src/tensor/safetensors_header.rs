//! Checking a safetensors file's header before a reader trusts it, so that every problem is
//! reported with the tensor it concerns.
//!
//! The layout: an 8-byte little-endian header length `n`, `n` bytes of JSON (an object mapping
//! each tensor name to `{"dtype", "shape", "data_offsets": [begin, end]}`, plus an optional
//! `"__metadata__"` object of strings), then the data. Offsets are relative to the start of the
//! data; the tensors must cover it exactly, in some order, without gaps or overlap. The
//! `safetensors` crate checks the same rules but its errors name no tensor
//! (`TensorInvalidInfo`, `InvalidHeaderDeserialization`) or the wrong one (a duplicate key is
//! reported as `InvalidOffset` of another tensor).

use super::{checked_numel, shape_str};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::fmt;

/// Headers larger than this are refused (the limit of the `safetensors` crate).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// One tensor of a checked header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderEntry {
    /// The tensor's name.
    pub name: String,
    /// Its dtype as written (`F32`, `F16`, `BF16`, ...).
    pub dtype: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its bytes within the data section, `begin..end`.
    pub data_offsets: (usize, usize),
}

/// The size in bytes of one element of a safetensors dtype, if it is one.
pub fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// The header's top-level entries in file order; a key given twice is an error naming it.
struct Entries(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Entries, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of tensors")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Entries, A::Error> {
                let mut out: Vec<(String, Value)> = Vec::new();
                let mut seen = std::collections::HashSet::new();
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    if !seen.insert(k.clone()) {
                        return Err(serde::de::Error::custom(format!(
                            "tensor '{k}' appears twice in the header"
                        )));
                    }
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn entry(name: &str, v: &Value) -> Result<HeaderEntry, String> {
    let bad = |m: String| format!("tensor '{name}': {m}");
    let obj = v
        .as_object()
        .ok_or_else(|| bad(format!("expected an object, got {v}")))?;
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "dtype" | "shape" | "data_offsets"))
    {
        return Err(bad(format!(
            "unknown field '{k}' (expected dtype, shape, data_offsets)"
        )));
    }
    let dtype = match obj.get("dtype") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(bad(format!("dtype must be a string, got {other}"))),
        None => return Err(bad("has no dtype".into())),
    };
    let size = dtype_size(&dtype).ok_or_else(|| bad(format!("unknown dtype '{dtype}'")))?;
    let uint = |field: &str, x: &Value| {
        x.as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| bad(format!("{field} must hold non-negative integers, got {x}")))
    };
    let shape = match obj.get("shape") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|d| uint("shape", d))
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => return Err(bad(format!("shape must be an array, got {other}"))),
        None => return Err(bad("has no shape".into())),
    };
    let (begin, end) = match obj.get("data_offsets") {
        Some(Value::Array(a)) if a.len() == 2 => {
            (uint("data_offsets", &a[0])?, uint("data_offsets", &a[1])?)
        }
        Some(other) => {
            return Err(bad(format!(
                "data_offsets must be [begin, end], got {other}"
            )))
        }
        None => return Err(bad("has no data_offsets".into())),
    };
    if end < begin {
        return Err(bad(format!(
            "data_offsets [{begin}, {end}] end before they begin"
        )));
    }
    let need = checked_numel(&shape)
        .and_then(|n| n.checked_mul(size))
        .ok_or_else(|| bad(format!("shape {} overflows", shape_str(&shape))))?;
    if need != end - begin {
        return Err(bad(format!(
            "dtype {dtype} and shape {} need {need} bytes but data_offsets [{begin}, {end}] hold {}",
            shape_str(&shape),
            end - begin
        )));
    }
    Ok(HeaderEntry {
        name: name.to_string(),
        dtype,
        shape,
        data_offsets: (begin, end),
    })
}

/// Checks the header of the safetensors file `bytes` and returns its tensors in file order.
/// Errors say what is wrong and name the tensor concerned (not the file: the caller adds it).
pub fn check_header(bytes: &[u8]) -> Result<Vec<HeaderEntry>, String> {
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            format!(
                "{} bytes are too few for the 8-byte header length",
                bytes.len()
            )
        })?;
    let n = u64::from_le_bytes(len_bytes);
    let avail = bytes.len() as u64 - 8;
    if n > avail {
        return Err(format!(
            "the header length {n} is larger than the {avail} bytes that follow it (truncated, or not a safetensors file)"
        ));
    }
    if n > MAX_HEADER_LEN {
        return Err(format!(
            "the header length {n} exceeds the limit of {MAX_HEADER_LEN} bytes"
        ));
    }
    let n = n as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n])
        .map_err(|e| format!("the header is not UTF-8: {e}"))?;
    let header = header.trim_end_matches(' ');
    if !header.starts_with('{') {
        return Err("the header is not a JSON object".into());
    }
    let Entries(raw) =
        serde_json::from_str(header).map_err(|e| format!("the header is not valid: {e}"))?;
    let data_len = bytes.len() - 8 - n;
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, v) in &raw {
        if name == "__metadata__" {
            let ok = v
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string));
            if !ok {
                return Err(format!(
                    "__metadata__ must be an object of strings, got {v}"
                ));
            }
            continue;
        }
        let t = entry(name, v)?;
        if t.data_offsets.1 > data_len {
            return Err(format!(
                "tensor '{name}': data_offsets [{}, {}] lie beyond the {data_len} bytes of data (truncated file?)",
                t.data_offsets.0, t.data_offsets.1
            ));
        }
        tensors.push(t);
    }
    let mut order: Vec<&HeaderEntry> = tensors.iter().collect();
    order.sort_by_key(|t| t.data_offsets);
    let mut at = (0usize, None::<&str>);
    for t in order {
        if t.data_offsets.0 != at.0 {
            return Err(match at.1 {
                Some(prev) if t.data_offsets.0 < at.0 => format!(
                    "tensor '{}' (bytes {}..{}) overlaps tensor '{prev}', which ends at byte {}",
                    t.name, t.data_offsets.0, t.data_offsets.1, at.0
                ),
                _ => format!(
                    "tensor '{}' starts at byte {} but the data before it ends at byte {} (a gap)",
                    t.name, t.data_offsets.0, at.0
                ),
            });
        }
        at = (t.data_offsets.1, Some(&t.name));
    }
    if at.0 != data_len {
        return Err(format!(
            "{} bytes of data follow the last tensor (the tensors cover {} of {data_len})",
            data_len - at.0,
            at.0
        ));
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: usize) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.resize(b.len() + data, 0);
        b
    }

    #[test]
    fn a_good_header_lists_its_tensors() {
        let h = r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"F16","shape":[2],"data_offsets":[8,12]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let t = check_header(&file(h, 12)).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].name.as_str(), t[0].data_offsets), ("b", (8, 12)));
        assert_eq!(t[1].shape, [2]);
    }

    #[test]
    fn every_problem_names_the_tensor() {
        let cases: &[(&str, usize, &[&str])] = &[
            (
                r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                8,
                &["'w'", "F32", "[3]", "12 bytes", "hold 8"],
            ),
            (
                r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                16,
                &["'w'", "twice"],
            ),
            (
                r#"{"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}"#,
                8,
                &["'w'", "unknown dtype 'Q4'"],
            ),
            (
                r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                4,
                &["'w'", "beyond the 4 bytes"],
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                8,
                &["'b'", "overlaps tensor 'a'"],
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                8,
                &["'a'", "gap"],
            ),
            (
                r#"{"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}"#,
                8,
                &["'w'", "overflows"],
            ),
            (
                r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}}"#,
                8,
                &["'w'", "shape must hold non-negative integers"],
            ),
            (
                r#"{"w":{"dtype":"F32","shape":[2]}}"#,
                8,
                &["'w'", "no data_offsets"],
            ),
            (r#"{"w":[1, 2]}"#, 0, &["'w'", "expected an object"]),
            (
                r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                8,
                &["4 bytes of data follow the last tensor"],
            ),
            (r#"[1, 2]"#, 0, &["not a JSON object"]),
            (r#"{"w": "#, 0, &["header is not valid"]),
        ];
        for (header, data, needles) in cases {
            let e = check_header(&file(header, *data)).unwrap_err();
            for n in *needles {
                assert!(e.contains(n), "{header}: {e:?} does not mention {n:?}");
            }
        }
    }

    #[test]
    fn lengths_that_do_not_fit_the_file() {
        let e = check_header(b"\x01\x02").unwrap_err();
        assert!(e.contains("2 bytes are too few"), "{e}");
        let mut b = file("{}", 0);
        b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = check_header(&b).unwrap_err();
        assert!(
            e.contains(&format!("header length {}", u64::MAX))
                && e.contains("larger than the 2 bytes"),
            "{e}"
        );
    }
}
