//! Devices: an rbln-npu device is a set of host CPU cores with its own thread pool.
//!
//! No NPU hardware is present, so a "device" is what can honestly stand for one on a CPU: a set
//! of cores, and a rayon pool of one thread per core whose threads are pinned to that set (on
//! Linux, `sched_setaffinity`). An executable runs on the pool of the device it was loaded on;
//! the kernels' `par_iter`s then split work among that pool's threads only. Two devices over
//! disjoint cores run side by side without competing for cores; nothing is process-global.
//!
//! The set is configured from a JSON object ([`DeviceSet::from_options`]):
//!
//! ```json
//! {"ids": [0, 1], "cores": {"0": [0, 1], "1": "2-3"}}
//! ```
//!
//! `ids` names the devices (default `[0]`); `cores` maps each id to a list of core numbers or a
//! range string (`"0-7"`, `"0-3,6"`), or is one such spec when there is a single id. Without
//! `cores`, the cores this process may run on are split evenly among the ids, in order.

use plugin_api::PluginError;
use serde_json::{json, Map, Value};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// One device: an id, its cores and its thread pool (created on first use).
pub struct CpuDevice {
    /// The device index models name (`rbln_config.device`, `device_map`).
    pub id: u64,
    /// The CPU cores its threads run on, ascending.
    pub cores: Vec<usize>,
    pool: OnceLock<Result<Pool, String>>,
}

/// Each pool thread's affinity once it has started, by thread index.
type Started = Vec<Option<Vec<usize>>>;

/// A device's pool and the affinity each of its threads read back (`sched_getaffinity`) right
/// after pinning itself, by thread index.
struct Pool {
    pool: rayon::ThreadPool,
    affinities: Vec<Vec<usize>>,
}

impl std::fmt::Debug for CpuDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuDevice")
            .field("id", &self.id)
            .field("cores", &self.cores)
            .finish()
    }
}

impl CpuDevice {
    /// A device of `cores` (checked against [`allowed_cores`] by [`DeviceSet::from_options`]).
    fn new(id: u64, cores: Vec<usize>) -> CpuDevice {
        CpuDevice {
            id,
            cores,
            pool: OnceLock::new(),
        }
    }

    /// The pool, started on first use: it is returned once every thread has pinned itself and
    /// recorded its affinity.
    fn pool(&self) -> Result<&Pool, PluginError> {
        let made = self.pool.get_or_init(|| {
            let cores = self.cores.clone();
            let id = self.id;
            let n = self.cores.len();
            let started: Arc<(Mutex<Started>, Condvar)> =
                Arc::new((Mutex::new(vec![None; n]), Condvar::new()));
            let record = started.clone();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .thread_name(move |i| format!("rbln-npu-dev{id}-{i}"))
                .start_handler(move |i| {
                    pin_current_thread(&cores);
                    let (lock, cv) = &*record;
                    let mut seen = lock.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(slot) = seen.get_mut(i) {
                        *slot = Some(current_affinity());
                    }
                    cv.notify_all();
                })
                .build()
                .map_err(|e| e.to_string())?;
            let (lock, cv) = &*started;
            let mut seen = lock.lock().unwrap_or_else(|p| p.into_inner());
            while seen.iter().any(Option::is_none) {
                seen = cv.wait(seen).unwrap_or_else(|p| p.into_inner());
            }
            let affinities = seen.iter().map(|a| a.clone().unwrap_or_default()).collect();
            Ok(Pool { pool, affinities })
        });
        made.as_ref().map_err(|e| {
            PluginError::internal(format!(
                "device {}: cannot start its thread pool: {e}",
                self.id
            ))
        })
    }

    /// Runs `f` on this device's pool: `f` and every rayon task it spawns run on the device's
    /// threads.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R, PluginError> {
        Ok(self.pool()?.pool.install(f))
    }

    /// The affinity of each of the pool's threads, read by each thread with `sched_getaffinity`
    /// once it had pinned itself (empty where the OS has no such call). Never waits for a run.
    pub fn thread_affinities(&self) -> Result<Vec<Vec<usize>>, PluginError> {
        Ok(self.pool()?.affinities.clone())
    }

    /// `{"id": 0, "cores": [0, 1]}`.
    pub fn to_json(&self) -> Value {
        json!({"id": self.id, "cores": self.cores})
    }
}

/// The configured devices, by id.
#[derive(Debug)]
pub struct DeviceSet {
    devices: Vec<Arc<CpuDevice>>,
}

impl DeviceSet {
    /// One device, 0, of every core this process may run on.
    pub fn all_cores() -> DeviceSet {
        DeviceSet {
            devices: vec![Arc::new(CpuDevice::new(0, allowed_cores()))],
        }
    }

    /// Parses `{"ids": [...], "cores": ...}` (see the module docs); `{}` or an empty string is
    /// [`DeviceSet::all_cores`].
    pub fn from_options(options_json: &str) -> Result<DeviceSet, PluginError> {
        let bad = |m: String| PluginError::invalid(format!("device options: {m}"));
        let v: Value = if options_json.trim().is_empty() {
            Value::Object(Map::new())
        } else {
            serde_json::from_str(options_json).map_err(|e| bad(format!("not valid JSON: {e}")))?
        };
        let m = v
            .as_object()
            .ok_or_else(|| bad(format!("must be a JSON object, got {v}")))?;
        for k in m.keys() {
            if k != "ids" && k != "cores" {
                return Err(bad(format!(
                    "unknown option '{k}' (the options are ids and cores)"
                )));
            }
        }
        let ids: Vec<u64> = match m.get("ids") {
            None | Some(Value::Null) => vec![0],
            Some(Value::Array(a)) if a.is_empty() => vec![0],
            Some(Value::Array(a)) => a
                .iter()
                .map(|d| {
                    d.as_u64().ok_or_else(|| {
                        bad(format!("ids: {d} is not a device index (an integer >= 0)"))
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(bad(format!("ids must be a list, got {other}"))),
        };
        let mut seen = std::collections::BTreeSet::new();
        if let Some(d) = ids.iter().find(|d| !seen.insert(**d)) {
            return Err(bad(format!("ids: device {d} is listed twice")));
        }
        let allowed = allowed_cores();
        let explicit: Vec<(u64, Vec<usize>)> = match m.get("cores") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(map)) => {
                let mut out = Vec::new();
                for (k, spec) in map {
                    let id: u64 = k
                        .parse()
                        .map_err(|_| bad(format!("cores: key '{k}' is not a device index")))?;
                    if !ids.contains(&id) {
                        return Err(bad(format!(
                            "cores: device {id} is not among the ids ({})",
                            list(&ids)
                        )));
                    }
                    out.push((
                        id,
                        parse_cores(spec, &allowed)
                            .map_err(|e| bad(format!("cores of device {id}: {e}")))?,
                    ));
                }
                out
            }
            Some(spec) if ids.len() == 1 => vec![(
                ids[0],
                parse_cores(spec, &allowed)
                    .map_err(|e| bad(format!("cores of device {}: {e}", ids[0])))?,
            )],
            Some(spec) => {
                return Err(bad(format!(
                    "cores {spec} is one core set but there are {} devices ({}); map each id \
                     to its cores, e.g. {{\"{}\": [0]}}",
                    ids.len(),
                    list(&ids),
                    ids[0]
                )))
            }
        };
        let devices = if explicit.is_empty() {
            split_evenly(&ids, &allowed).map_err(bad)?
        } else {
            let missing: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|d| !explicit.iter().any(|(e, _)| e == d))
                .collect();
            if !missing.is_empty() {
                return Err(bad(format!(
                    "cores are given for some devices but not for {}; give cores for every id \
                     or for none (then the cores are split evenly)",
                    list(&missing)
                )));
            }
            ids.iter()
                .map(|d| {
                    let cores = explicit
                        .iter()
                        .find(|(e, _)| e == d)
                        .map(|(_, c)| c.clone())
                        .unwrap_or_default();
                    CpuDevice::new(*d, cores)
                })
                .collect()
        };
        Ok(DeviceSet {
            devices: devices.into_iter().map(Arc::new).collect(),
        })
    }

    /// The device `id`, or an error naming it and the devices that exist.
    pub fn get(&self, id: u64) -> Result<&Arc<CpuDevice>, PluginError> {
        self.devices.iter().find(|d| d.id == id).ok_or_else(|| {
            PluginError::invalid(format!(
                "device {id} does not exist; the rbln-npu devices are {}",
                self.summary()
            ))
        })
    }

    /// The devices, in id order as configured.
    pub fn devices(&self) -> &[Arc<CpuDevice>] {
        &self.devices
    }

    /// `0 (cores 0), 1 (cores 1)`.
    pub fn summary(&self) -> String {
        self.devices
            .iter()
            .map(|d| format!("{} (cores {})", d.id, ranges(&d.cores)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `[{"id": 0, "cores": [0]}, ...]`.
    pub fn to_json(&self) -> Value {
        Value::Array(self.devices.iter().map(|d| d.to_json()).collect())
    }
}

fn list(ids: &[u64]) -> String {
    ids.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Splits `allowed` into `ids.len()` contiguous chunks, the first ones one core larger when the
/// count does not divide.
fn split_evenly(ids: &[u64], allowed: &[usize]) -> Result<Vec<CpuDevice>, String> {
    let (n, k) = (allowed.len(), ids.len());
    if n < k {
        return Err(format!(
            "{k} devices ({}) cannot share {n} core(s) ({}) evenly; give each id its cores",
            list(ids),
            ranges(allowed)
        ));
    }
    let mut start = 0;
    Ok(ids
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let len = n / k + usize::from(i < n % k);
            let cores = allowed[start..start + len].to_vec();
            start += len;
            CpuDevice::new(*d, cores)
        })
        .collect())
}

/// Parses a core list (`[0, 1]`) or range string (`"0-7"`, `"0-3,6"`), checked against the
/// cores this process may use.
pub fn parse_cores(spec: &Value, allowed: &[usize]) -> Result<Vec<usize>, String> {
    let mut cores = Vec::new();
    match spec {
        Value::Array(items) => {
            for c in items {
                let n = c
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| format!("{c} is not a core number (an integer >= 0)"))?;
                cores.push(n);
            }
        }
        Value::String(s) => {
            for part in s.split(',').map(str::trim) {
                let num = |t: &str| {
                    t.trim().parse::<usize>().map_err(|_| {
                        format!("\"{s}\": '{t}' is not a core number (ranges look like \"0-7\")")
                    })
                };
                match part.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (num(a)?, num(b)?);
                        if a > b {
                            return Err(format!("\"{s}\": range {a}-{b} ends before it starts"));
                        }
                        if b - a >= 1 << 16 {
                            return Err(format!("\"{s}\": range {a}-{b} is too long"));
                        }
                        cores.extend(a..=b);
                    }
                    None => cores.push(num(part)?),
                }
            }
        }
        other => {
            return Err(format!(
                "{other} is not a core set (give a list like [0, 1] or a range like \"0-7\")"
            ))
        }
    }
    if cores.is_empty() {
        return Err("the core set is empty".into());
    }
    let mut sorted = cores.clone();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("core {} is listed twice", w[0]));
    }
    if let Some(c) = sorted.iter().find(|c| !allowed.contains(c)) {
        return Err(format!(
            "core {c} is not available to this process (available: {})",
            ranges(allowed)
        ));
    }
    Ok(sorted)
}

/// `[0, 1, 2, 5]` as `0-2,5`.
pub fn ranges(cores: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cores.len() {
        let mut j = i;
        while j + 1 < cores.len() && cores[j + 1] == cores[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cores[i].to_string()
        } else {
            format!("{}-{}", cores[i], cores[j])
        });
        i = j + 1;
    }
    out.join(",")
}

/// The cores this process may run on (its `sched_getaffinity` mask on Linux; elsewhere
/// `0..available_parallelism`).
pub fn allowed_cores() -> Vec<usize> {
    let mask = current_affinity();
    if !mask.is_empty() {
        return mask;
    }
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..n).collect()
}

/// The calling thread's affinity mask, ascending; empty when unknown.
#[cfg(target_os = "linux")]
pub fn current_affinity() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most size_of::<cpu_set_t>()
    // bytes into it, and CPU_ISSET reads within it for indices below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// The calling thread's affinity mask: unknown on this OS.
#[cfg(not(target_os = "linux"))]
pub fn current_affinity() -> Vec<usize> {
    Vec::new()
}

/// Pins the calling thread to `cores` (Linux); elsewhere the OS schedules it freely.
#[cfg(target_os = "linux")]
fn pin_current_thread(cores: &[usize]) {
    // SAFETY: as in `current_affinity`; CPU_SET writes within the set for indices below
    // CPU_SETSIZE, which the filter guarantees.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cores.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(c, &mut set);
        }
        // The cores were checked against the process's mask, so this does not fail in
        // practice; if it did, the thread would keep the process's mask (still correct, only
        // not isolated), which `thread_affinities` would show.
        let _ = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(not(target_os = "linux"))]
fn pin_current_thread(_cores: &[usize]) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_specs_parse_and_errors_name_the_problem() {
        let allowed: Vec<usize> = (0..8).collect();
        assert_eq!(parse_cores(&json!([3, 1]), &allowed).unwrap(), vec![1, 3]);
        assert_eq!(
            parse_cores(&json!("0-2,5"), &allowed).unwrap(),
            vec![0, 1, 2, 5]
        );
        for (spec, want) in [
            (json!("3-1"), "ends before it starts"),
            (json!("a-2"), "'a' is not a core number"),
            (json!([1, 1]), "core 1 is listed twice"),
            (
                json!([9]),
                "core 9 is not available to this process (available: 0-7)",
            ),
            (json!([]), "empty"),
            (json!(2), "is not a core set"),
            (json!([-1]), "-1 is not a core number"),
        ] {
            let e = parse_cores(&spec, &allowed).unwrap_err();
            assert!(e.contains(want), "{spec}: {e}");
        }
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
    }

    #[test]
    fn default_split_and_explicit_sets() {
        let all = allowed_cores();
        let s = DeviceSet::from_options("").unwrap();
        assert_eq!(s.devices().len(), 1);
        assert_eq!(s.devices()[0].cores, all);
        let ids = r#"{"ids": [0, 1]}"#;
        if all.len() >= 2 {
            let s = DeviceSet::from_options(ids).unwrap();
            let (a, b) = (&s.devices()[0].cores, &s.devices()[1].cores);
            assert_eq!(a.len() + b.len(), all.len());
            assert!(a.len() >= b.len() && a.len() - b.len() <= 1);
            assert!(a.iter().all(|c| !b.contains(c)));
        }
        let one = format!(r#"{{"ids": [4], "cores": [{}]}}"#, all[0]);
        let s = DeviceSet::from_options(&one).unwrap();
        assert_eq!(s.get(4).unwrap().cores, vec![all[0]]);
        let e = s.get(2).unwrap_err().to_string();
        assert!(e.contains("device 2 does not exist"), "{e}");
        assert!(e.contains(&format!("4 (cores {})", all[0])), "{e}");
    }

    #[test]
    fn bad_options_are_errors_naming_the_field() {
        let c = allowed_cores()[0];
        for (opts, want) in [
            ("[1]".to_string(), "must be a JSON object"),
            (r#"{"threads": 2}"#.into(), "unknown option 'threads'"),
            (r#"{"ids": [0, 0]}"#.into(), "device 0 is listed twice"),
            (
                r#"{"ids": ["a"]}"#.into(),
                "ids: \"a\" is not a device index",
            ),
            (
                format!(r#"{{"ids": [0, 1], "cores": {{"0": [{c}]}}}}"#),
                "not for 1",
            ),
            (
                format!(r#"{{"ids": [0], "cores": {{"3": [{c}]}}}}"#),
                "device 3 is not among the ids",
            ),
            (
                format!(r#"{{"ids": [0, 1], "cores": [{c}]}}"#),
                "one core set but there are 2 devices",
            ),
            (r#"{"cores": "0-99999"}"#.into(), "cores of device 0"),
            (
                format!(
                    r#"{{"ids": {:?}}}"#,
                    (0..=allowed_cores().len()).collect::<Vec<_>>()
                ),
                "cannot share",
            ),
        ] {
            let e = DeviceSet::from_options(&opts).unwrap_err().to_string();
            assert!(e.contains(want), "{opts}: {e}");
            assert!(e.starts_with("device options: "), "{e}");
        }
    }

    #[test]
    fn pool_threads_are_pinned_to_their_device_cores() {
        let c = *allowed_cores().last().unwrap();
        let s = DeviceSet::from_options(&format!(r#"{{"cores": [{c}]}}"#)).unwrap();
        let d = s.get(0).unwrap();
        assert_eq!(d.thread_affinities().unwrap(), vec![vec![c]]);
        assert_eq!(d.install(current_affinity).unwrap(), vec![c]);
        assert_eq!(d.install(rayon::current_num_threads).unwrap(), 1);
    }
}
