//! The artifact file format.
//!
//! ```text
//! offset  size  field
//! 0       8     magic  b"RBLNNPU\0"
//! 8       4     format version (u32 LE)
//! 12      4     CRC32 of the payload (u32 LE)
//! 16      8     payload length in bytes (u64 LE)
//! 24      ...   payload: plan JSON length (u64 LE), plan JSON, then every stored weight's
//!               floats (f32 LE) in store order
//! ```
//!
//! Version 4 (written): the plan JSON is `{"store": [weight], "plans": [{"program": plan,
//! "weights": [store index]}]}`: one plan per compiled input shape, all reading one store of
//! packed weights (plan weight `i` is store entry `weights[i]`), so that a model compiled for
//! many shapes holds its weights once. Version 3 (still read): the plan JSON is one plan and the
//! floats are its weights, in plan order.

use crate::program::{Program, Weight};
use plugin_api::PluginError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// First bytes of every artifact.
pub const MAGIC: [u8; 8] = *b"RBLNNPU\0";
/// Version of the layout above and of the plan JSON, as written.
pub const FORMAT_VERSION: u32 = 4;
/// The single-plan version this build still reads.
pub const FORMAT_VERSION_SINGLE: u32 = 3;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 24;

#[derive(Serialize, Deserialize)]
struct Bundle {
    store: Vec<Weight>,
    plans: Vec<PlanRecord>,
}

#[derive(Serialize, Deserialize)]
struct PlanRecord {
    program: Program,
    weights: Vec<usize>,
}

fn header(version: u32, mut payload: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.append(&mut payload);
    out
}

fn push_floats(out: &mut Vec<u8>, data: &[f32]) {
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Serializes a planned program (weights included) as a one-plan artifact.
pub fn encode(p: &Program) -> Result<Vec<u8>, PluginError> {
    encode_plans(std::slice::from_ref(p))
}

/// Serializes the plans of one graph for several input shapes. Weights the plans share (the
/// same stored floats) are written once.
pub fn encode_plans(plans: &[Program]) -> Result<Vec<u8>, PluginError> {
    let mut store: Vec<Weight> = Vec::new();
    let mut index: HashMap<*const Vec<f32>, usize> = HashMap::new();
    let mut records = Vec::with_capacity(plans.len());
    for p in plans {
        let weights = p
            .weights
            .iter()
            .map(|w| {
                *index.entry(Arc::as_ptr(&w.data)).or_insert_with(|| {
                    store.push(w.clone());
                    store.len() - 1
                })
            })
            .collect();
        records.push(PlanRecord {
            program: p.clone(),
            weights,
        });
    }
    let floats: usize = store.iter().map(|w| w.data.len()).sum();
    let bundle = Bundle {
        store,
        plans: records,
    };
    let json = serde_json::to_vec(&bundle)
        .map_err(|e| PluginError::internal(format!("serializing the plan: {e}")))?;
    let mut payload = Vec::with_capacity(8 + json.len() + floats * 4);
    payload.extend_from_slice(&(json.len() as u64).to_le_bytes());
    payload.extend_from_slice(&json);
    for w in &bundle.store {
        push_floats(&mut payload, &w.data);
    }
    Ok(header(FORMAT_VERSION, payload))
}

/// Serializes one plan in the single-plan layout of format version 3 (for tests of the reader).
pub fn encode_v3(p: &Program) -> Result<Vec<u8>, PluginError> {
    let json = serde_json::to_vec(p)
        .map_err(|e| PluginError::internal(format!("serializing the plan: {e}")))?;
    let mut payload = Vec::new();
    payload.extend_from_slice(&(json.len() as u64).to_le_bytes());
    payload.extend_from_slice(&json);
    for w in &p.weights {
        push_floats(&mut payload, &w.data);
    }
    Ok(header(FORMAT_VERSION_SINGLE, payload))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn bad(m: String) -> PluginError {
    PluginError::invalid(format!("rbln-npu artifact: {m}"))
}

/// Reads the floats of `weights` in order from the front of `rest`.
fn read_floats(weights: &mut [Weight], mut rest: &[u8]) -> Result<(), PluginError> {
    for w in weights {
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
        w.data = Arc::new(crate::kernels::buffers::floats_from_le(&rest[..nbytes]));
        rest = &rest[nbytes..];
    }
    if !rest.is_empty() {
        return Err(bad(format!(
            "{} unexpected bytes after the weights",
            rest.len()
        )));
    }
    Ok(())
}

/// Parses and verifies a one-plan artifact (see [`decode_plans`]); a multi-shape artifact gives
/// its first plan.
pub fn decode(bytes: &[u8]) -> Result<Program, PluginError> {
    Ok(decode_plans(bytes)?.swap_remove(0))
}

/// Parses and verifies an artifact: magic, version, length, checksum, then each plan's own
/// consistency ([`Program::validate`]), including its memory plan. Returns at least one plan;
/// the plans share their weights' floats.
pub fn decode_plans(bytes: &[u8]) -> Result<Vec<Program>, PluginError> {
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
    if version != FORMAT_VERSION && version != FORMAT_VERSION_SINGLE {
        return Err(PluginError::unsupported(format!(
            "rbln-npu artifact: format version {version} is not supported (this build reads versions {FORMAT_VERSION_SINGLE} and {FORMAT_VERSION}); recompile the model"
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
    let (json, rest) = (&payload[8..json_end], &payload[json_end..]);
    let plans = if version == FORMAT_VERSION_SINGLE {
        let mut p: Program =
            serde_json::from_slice(json).map_err(|e| bad(format!("malformed plan: {e}")))?;
        read_floats(&mut p.weights, rest)?;
        vec![p]
    } else {
        let mut b: Bundle =
            serde_json::from_slice(json).map_err(|e| bad(format!("malformed plan: {e}")))?;
        read_floats(&mut b.store, rest)?;
        if b.plans.is_empty() {
            return Err(bad("the artifact holds no plan".into()));
        }
        let mut plans = Vec::with_capacity(b.plans.len());
        for (k, r) in b.plans.into_iter().enumerate() {
            let mut p = r.program;
            if r.weights.len() != p.weights.len() {
                return Err(bad(format!(
                    "plan {k} has {} weights but maps {} to the store",
                    p.weights.len(),
                    r.weights.len()
                )));
            }
            for (i, (w, &s)) in p.weights.iter_mut().zip(&r.weights).enumerate() {
                let stored = b.store.get(s).ok_or_else(|| {
                    bad(format!(
                        "plan {k} weight {i} refers to store entry {s} of {}",
                        b.store.len()
                    ))
                })?;
                if stored.name != w.name || stored.layout != w.layout || stored.len != w.len {
                    return Err(bad(format!(
                        "plan {k} weight '{}' does not match store entry {s} ('{}')",
                        w.name, stored.name
                    )));
                }
                w.data = Arc::clone(&stored.data);
            }
            plans.push(p);
        }
        plans
    };
    for (k, p) in plans.iter().enumerate() {
        if p.memory.is_none() {
            return Err(bad(format!("plan {k} has no memory plan")));
        }
        p.validate()
            .map_err(|e| bad(format!("inconsistent plan {k}: {e}")))?;
    }
    if let Some(p) = plans.iter().skip(1).find(|p| {
        p.name != plans[0].name
            || p.inputs.len() != plans[0].inputs.len()
            || p.outputs.len() != plans[0].outputs.len()
    }) {
        return Err(bad(format!(
            "plan for {} is not a plan of graph '{}'",
            p.name, plans[0].name
        )));
    }
    Ok(plans)
}
