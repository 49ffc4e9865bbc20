//! The artifact file format.
//!
//! ```text
//! offset  size  field
//! 0       8     magic  b"RBLNNPU\0"
//! 8       4     format version (u32 LE)
//! 12      4     CRC32 of the payload (u32 LE)
//! 16      8     payload length in bytes (u64 LE)
//! 24      ...   payload: plan JSON length (u64 LE), plan JSON, then every weight's floats
//!               (f32 LE) in plan order
//! ```

use crate::program::Program;
use plugin_api::PluginError;

/// First bytes of every artifact.
pub const MAGIC: [u8; 8] = *b"RBLNNPU\0";
/// Version of the layout above and of the plan JSON.
pub const FORMAT_VERSION: u32 = 3;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 24;

/// Serializes a planned program (weights included).
pub fn encode(p: &Program) -> Result<Vec<u8>, PluginError> {
    let json = serde_json::to_vec(p)
        .map_err(|e| PluginError::internal(format!("serializing the plan: {e}")))?;
    let weight_bytes: usize = p.weights.iter().map(|w| w.data.len() * 4).sum();
    let mut out = Vec::with_capacity(HEADER_LEN + 8 + json.len() + weight_bytes);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 12]); // CRC32 and payload length, patched below
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for w in &p.weights {
        for v in &w.data {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&out[HEADER_LEN..]);
    let len = (out.len() - HEADER_LEN) as u64;
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    out[16..24].copy_from_slice(&len.to_le_bytes());
    Ok(out)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses and verifies an artifact: magic, version, length, checksum, then the plan's own
/// consistency ([`Program::validate`]), including its memory plan.
pub fn decode(bytes: &[u8]) -> Result<Program, PluginError> {
    let bad = |m: String| PluginError::invalid(format!("rbln-npu artifact: {m}"));
    let k = bytes.len().min(MAGIC.len());
    if bytes[..k] != MAGIC[..k] {
        return Err(bad(format!(
            "wrong magic bytes {:?} (expected {:?}); this is not an rbln-npu artifact",
            &bytes[..bytes.len().min(8)],
            MAGIC
        )));
    }
    if bytes.len() < HEADER_LEN {
        return Err(bad(format!(
            "truncated: expected at least {HEADER_LEN} header bytes, got {}",
            bytes.len()
        )));
    }
    let version = u32_at(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(PluginError::unsupported(format!(
            "rbln-npu artifact: format version {version} is not supported (this build reads version {FORMAT_VERSION}); recompile the model"
        )));
    }
    let crc = u32_at(bytes, 12);
    let len = u64_at(bytes, 16);
    let expected = (HEADER_LEN as u64).saturating_add(len);
    if (bytes.len() as u64) < expected {
        return Err(bad(format!(
            "truncated: expected {expected} bytes, got {}",
            bytes.len()
        )));
    }
    if (bytes.len() as u64) > expected {
        return Err(bad(format!(
            "length mismatch: expected {expected} bytes, got {} (trailing data)",
            bytes.len()
        )));
    }
    let payload = &bytes[HEADER_LEN..];
    let actual = crc32fast::hash(payload);
    if actual != crc {
        return Err(bad(format!(
            "corrupt: CRC32 checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"
        )));
    }
    if payload.len() < 8 {
        return Err(bad("payload too short for the plan length".into()));
    }
    let json_len = u64_at(payload, 0);
    let json_end = 8u64
        .checked_add(json_len)
        .filter(|&e| e <= payload.len() as u64)
        .ok_or_else(|| bad(format!("plan length {json_len} exceeds the payload")))?
        as usize;
    let mut p: Program = serde_json::from_slice(&payload[8..json_end])
        .map_err(|e| bad(format!("malformed plan: {e}")))?;
    let mut rest = &payload[json_end..];
    for w in &mut p.weights {
        let nbytes = w
            .len
            .checked_mul(4)
            .filter(|&n| n <= rest.len())
            .ok_or_else(|| {
                bad(format!(
                    "weight '{}' needs {} floats but only {} bytes remain",
                    w.name,
                    w.len,
                    rest.len()
                ))
            })?;
        w.data = crate::kernels::buffers::floats_from_le(&rest[..nbytes]);
        rest = &rest[nbytes..];
    }
    if !rest.is_empty() {
        return Err(bad(format!(
            "{} unexpected bytes after the weights",
            rest.len()
        )));
    }
    if p.memory.is_none() {
        return Err(bad("the plan has no memory plan".into()));
    }
    p.validate()
        .map_err(|e| bad(format!("inconsistent plan: {e}")))?;
    Ok(p)
}
