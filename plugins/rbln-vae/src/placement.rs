//! Where each part runs and how: the runtime options `device`, `device_map`, `timeout` and
//! `activate_profiler` turned into the device plugin's load options, and the replicas of a part
//! loaded on several devices.
//!
//! `device` places the whole model: one index, or a list (each part is then loaded once on
//! every listed device, and a call runs on the replica whose device is least busy, a free one
//! when there is one). `device_map` places one part on one device and wins over `device`.
//! Without either (or with only device 0, and no timeout or profile), each part is loaded with
//! plain `Device::load` (the plugin's default device, 0).
//! An index is checked against `Device::devices_json` before anything is loaded.

use crate::rbln_config::{DeviceSpec, RuntimeOptions};
use plugin_api::{DeviceBox, ExecutableBox, PluginError};
use serde_json::{json, Value};
use std::sync::Mutex;

/// Where one part is loaded: device indices (empty: the plugin's default) and the load options
/// every replica shares.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Placement {
    /// The devices, in the order given; empty means "the default device".
    pub devices: Vec<u64>,
    /// `timeout` in seconds.
    pub timeout: Option<f64>,
    /// `activate_profiler`.
    pub profile: bool,
    /// Names the model and part in profiles and timeout messages, e.g. `sd-vae decoder`.
    pub label: String,
}

impl Placement {
    /// The placement of part `part` under `rt`; `model` names the model in labels.
    pub fn of(rt: &RuntimeOptions, part: &str, model: &str) -> Placement {
        let mapped = rt
            .device_map
            .iter()
            .flatten()
            .find(|(p, _)| p == part)
            .map(|(_, d)| vec![*d]);
        let devices = mapped.unwrap_or_else(|| match &rt.device {
            None => Vec::new(),
            Some(DeviceSpec::One(d)) => vec![*d],
            Some(DeviceSpec::Many(ds)) => ds.clone(),
        });
        Placement {
            devices,
            timeout: rt.timeout,
            profile: rt.activate_profiler.unwrap_or(false),
            label: format!("{model} {part}"),
        }
    }

    /// The field a device index of this part came from, for messages.
    fn field(rt: &RuntimeOptions, part: &str) -> String {
        if rt.device_map.iter().flatten().any(|(p, _)| p == part) {
            format!("device_map.{part}")
        } else {
            "device".to_string()
        }
    }

    /// Checks every index against the devices `device` has; the error names the field, the
    /// index and the devices that exist.
    pub fn check(
        &self,
        rt: &RuntimeOptions,
        part: &str,
        device: &DeviceBox,
    ) -> Result<(), PluginError> {
        if self.devices.is_empty() {
            return Ok(());
        }
        let listed: Value =
            serde_json::from_str(device.devices_json().as_str()).unwrap_or(Value::Null);
        let known: Vec<(u64, String)> = listed
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| {
                let id = d.get("id")?.as_u64()?;
                let cores = d
                    .get("cores")
                    .and_then(Value::as_array)
                    .map(|c| {
                        let c: Vec<String> = c.iter().map(|v| v.to_string()).collect();
                        format!(" (cores {})", c.join(", "))
                    })
                    .unwrap_or_default();
                Some((id, format!("{id}{cores}")))
            })
            .collect();
        for d in &self.devices {
            if !known.iter().any(|(id, _)| id == d) {
                let names: Vec<&str> = known.iter().map(|(_, s)| s.as_str()).collect();
                return Err(PluginError::invalid(format!(
                    "{}: device {d} does not exist; the {} devices are {}",
                    Self::field(rt, part),
                    device.name(),
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                )));
            }
        }
        Ok(())
    }

    /// Whether the plugin's plain `load` does: no timeout or profile, and no device or only
    /// device 0 (which `load` uses; so a device plugin without `load_with` still takes
    /// `device: 0`).
    fn plain(&self) -> bool {
        matches!(self.devices[..], [] | [0]) && self.timeout.is_none() && !self.profile
    }

    /// Loads `artifact` once per device of this placement (once on the default device when
    /// none is given).
    pub fn load(&self, device: &DeviceBox, artifact: &[u8]) -> Result<Replicas, PluginError> {
        if self.plain() {
            let exe = device.load(artifact.into()).into_result()?;
            return Ok(Replicas::new(vec![(self.devices.first().copied(), exe)]));
        }
        let ids: Vec<Option<u64>> = if self.devices.is_empty() {
            vec![None]
        } else {
            self.devices.iter().copied().map(Some).collect()
        };
        let mut exes = Vec::with_capacity(ids.len());
        for id in ids {
            let mut o = json!({"label": self.label});
            if let Some(id) = id {
                o["device"] = json!(id);
            }
            if let Some(t) = self.timeout {
                o["timeout"] = json!(t);
            }
            if self.profile {
                o["profile"] = json!(true);
            }
            let exe = device
                .load_with(artifact.into(), o.to_string().as_str().into())
                .into_result()
                .map_err(|e| match id {
                    Some(id) => e.context(format!("on device {id}")),
                    None => e,
                })?;
            exes.push((id, exe));
        }
        Ok(Replicas::new(exes))
    }
}

/// A part's executables, one per device it was placed on, with how many runs each has in
/// flight.
pub(crate) struct Replicas {
    exes: Vec<(Option<u64>, ExecutableBox)>,
    busy: Mutex<Vec<usize>>,
}

/// A replica taken for one run; it is given back when dropped.
pub(crate) struct Lease<'a> {
    of: &'a Replicas,
    index: usize,
}

impl Lease<'_> {
    /// The executable to run.
    pub fn exe(&self) -> &ExecutableBox {
        &self.of.exes[self.index].1
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut busy = self.of.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy[self.index] = busy[self.index].saturating_sub(1);
    }
}

impl Replicas {
    fn new(exes: Vec<(Option<u64>, ExecutableBox)>) -> Replicas {
        let n = exes.len();
        Replicas {
            exes,
            busy: Mutex::new(vec![0; n]),
        }
    }

    /// The first executable (all replicas have the same signature).
    pub fn first(&self) -> &ExecutableBox {
        &self.exes[0].1
    }

    /// Takes the replica with the fewest runs in flight (the first free one when any is).
    pub fn lease(&self) -> Lease<'_> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let index = (0..busy.len()).min_by_key(|&i| busy[i]).unwrap_or(0);
        busy[index] += 1;
        Lease { of: self, index }
    }

    /// Each replica's device and what its executable says of itself (`Executable::info_json`).
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.exes
                .iter()
                .map(|(id, exe)| {
                    let mut info: Value =
                        serde_json::from_str(exe.info_json().as_str()).unwrap_or(json!({}));
                    if let (Some(id), Some(m)) = (id, info.as_object_mut()) {
                        m.entry("device").or_insert(json!(id));
                    }
                    info
                })
                .collect(),
        )
    }
}
