//! The persistent tuning cache: the decode schedule tuning found fastest, per device and
//! product, kept on disk so that a process chooses it without timing anything.
//!
//! What this module promises:
//! - a file holds the entries of any number of devices; an entry is found only for the same
//!   [`DeviceKey`] (GPU model and compute capability, driver version, library version), so a
//!   new driver or library version starts untuned (the heuristic) instead of trusting old
//!   timings;
//! - writers take an exclusive lock on a file beside the cache (`<file>.lock`), read what is
//!   there, merge their entries in and replace the file by renaming a complete temporary file,
//!   so concurrent processes lose no entry and a reader never sees half a file (readers take no
//!   lock);
//! - a file that does not parse is reported as [`TuningError::Corrupt`] by [`TuningCache::load`];
//!   [`TuningCache::store`] replaces such a file (it holds nothing usable) rather than failing.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anybit_dtype::DType;
use serde::{Deserialize, Serialize};

use crate::decode::{DecodeKernel, DecodeSchedule};
use crate::format::{Activation, QuantFormat};

/// The version of the file layout; a file of another version is treated as corrupt.
const FORMAT_VERSION: u32 = 1;

/// The name of the cache file inside its directory.
pub const FILE_NAME: &str = "tuning.json";

/// What a tuned schedule is valid for besides the product: the device and the software.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceKey {
    /// The GPU's name as the driver reports it, e.g. `NVIDIA H100 80GB HBM3`.
    pub gpu: String,
    /// Compute capability, e.g. `9.0`.
    pub compute_capability: String,
    /// The CUDA version the driver supports, e.g. `13.0`.
    pub driver: String,
    /// This library's version.
    pub library: String,
}

impl DeviceKey {
    /// The key of `gpu` with the driver this process uses.
    pub fn of(gpu: &anybit_cuda::Gpu) -> DeviceKey {
        let driver = match anybit_cuda::probe_driver() {
            anybit_cuda::DriverStatus::Available { version, .. } => version,
            _ => (0, 0),
        };
        let info = gpu.info();
        DeviceKey::new(&info.name, info.compute_capability, driver)
    }

    /// The key of a GPU (name, compute capability `(major, minor)`), a driver's CUDA version
    /// and this library's version.
    pub fn new(gpu: &str, compute_capability: (i32, i32), driver: (i32, i32)) -> DeviceKey {
        DeviceKey {
            gpu: gpu.to_string(),
            compute_capability: format!("{}.{}", compute_capability.0, compute_capability.1),
            driver: format!("{}.{}", driver.0, driver.1),
            library: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// One product shape a schedule is tuned for. M is bucketed by token tiles (M ≤ 8, ≤ 16,
/// ≤ 32, ≤ 64), the granularity at which kernels differ.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TuningKey {
    /// The weight format as text, e.g. `u4 g128 zero points` (its `Display`).
    pub format: String,
    pub activation: String,
    pub scale_dtype: String,
    pub n: usize,
    pub k: usize,
    /// The largest M of the bucket: 8, 16, 32 or 64.
    pub max_tokens: usize,
}

impl TuningKey {
    /// The key of a product of `m` tokens (1 ≤ m ≤ 64) with an `[n, k]` weight.
    pub fn new(
        format: QuantFormat,
        activation: Activation,
        scale_dtype: DType,
        n: usize,
        k: usize,
        m: usize,
    ) -> TuningKey {
        TuningKey {
            format: format.to_string(),
            activation: activation.to_string(),
            scale_dtype: scale_dtype.to_string(),
            n,
            k,
            max_tokens: token_bucket(m),
        }
    }
}

/// The largest M of the bucket `m` falls in: 8, 16, 32 or 64 (M above 64 maps to 64).
pub fn token_bucket(m: usize) -> usize {
    8 * m.div_ceil(8).next_power_of_two().clamp(1, 8)
}

/// A tuned schedule and the median time tuning measured for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TunedSchedule {
    /// The schedule's tag, e.g. `w2k4r2t1c2x`.
    pub schedule: String,
    /// Median time of the winner, microseconds.
    pub us: f64,
    /// How many candidates were timed.
    pub candidates: usize,
}

impl TunedSchedule {
    /// The schedule, if its tag parses (a file written by a later library version may hold
    /// tags this one does not know; they are ignored).
    pub fn parsed(&self) -> Option<DecodeSchedule> {
        self.schedule.parse().ok()
    }
}

#[derive(Serialize, Deserialize)]
struct DeviceEntries {
    device: DeviceKey,
    entries: Vec<(TuningKey, TunedSchedule)>,
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    format_version: u32,
    devices: Vec<DeviceEntries>,
}

/// The tuned schedules of one device, as loaded.
pub type TuningTable = BTreeMap<TuningKey, TunedSchedule>;

/// `table`'s schedule for `m` tokens and an `[n, k]` weight, if it has one that takes `m`
/// tokens and the shape.
pub fn tuned_schedule(
    table: &TuningTable,
    format: QuantFormat,
    activation: Activation,
    scale_dtype: DType,
    n: usize,
    k: usize,
    m: usize,
) -> Option<DecodeSchedule> {
    let key = TuningKey::new(format, activation, scale_dtype, n, k, m);
    let fits = |schedule: &DecodeSchedule| {
        let kernel = DecodeKernel {
            format,
            activation,
            scale_dtype,
            bias: false,
            schedule: *schedule,
        };
        schedule.max_tokens() >= m && kernel.supports(k)
    };
    table.get(&key).and_then(TunedSchedule::parsed).filter(fits)
}

/// The schedule the library launches for `m` tokens and an `[n, k]` weight: `table`'s entry
/// ([`tuned_schedule`]), else [`DecodeSchedule::heuristic`].
pub fn schedule_from(
    table: &TuningTable,
    format: QuantFormat,
    activation: Activation,
    scale_dtype: DType,
    n: usize,
    k: usize,
    m: usize,
) -> DecodeSchedule {
    tuned_schedule(table, format, activation, scale_dtype, n, k, m)
        .unwrap_or_else(|| DecodeSchedule::heuristic(m, n, k, format, activation))
}

/// Why the tuning cache could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TuningError {
    #[error("tuning cache {path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    #[error("tuning cache {path} is not a tuning cache of format version {FORMAT_VERSION} ({detail}); delete it or run `anybit tune` again to replace it")]
    Corrupt { path: PathBuf, detail: String },
}

/// The tuning cache file.
#[derive(Clone, Debug)]
pub struct TuningCache {
    path: PathBuf,
}

impl TuningCache {
    /// The cache in the file `path`.
    pub fn at(path: impl Into<PathBuf>) -> TuningCache {
        TuningCache { path: path.into() }
    }

    /// [`FILE_NAME`] in the directory of the kernel cache (`ANYBIT_CACHE_DIR`, else the user's
    /// cache directory; see `anybit_cuda::KernelCache::default_location`).
    pub fn default_location() -> TuningCache {
        let kernels = anybit_cuda::KernelCache::default_location();
        TuningCache::at(kernels.directory().join(FILE_NAME))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entries of `device`; empty when the file does not exist.
    pub fn load(&self, device: &DeviceKey) -> Result<TuningTable, TuningError> {
        Ok(self.read_all()?.remove(device).unwrap_or_default())
    }

    /// The tuned schedule for `key` on `device`, if any. A missing or unreadable cache is no
    /// schedule (the caller falls back to the heuristic); [`TuningCache::load`] reports why.
    pub fn lookup(&self, device: &DeviceKey, key: &TuningKey) -> Option<DecodeSchedule> {
        self.load(device).ok()?.get(key)?.parsed()
    }

    /// Adds (or replaces) `entries` for `device`, keeping every other entry of the file,
    /// under the lock.
    pub fn store(
        &self,
        device: &DeviceKey,
        entries: impl IntoIterator<Item = (TuningKey, TunedSchedule)>,
    ) -> Result<(), TuningError> {
        let io = |action: &'static str| {
            let path = self.path.clone();
            move |source| TuningError::Io {
                path,
                action,
                source,
            }
        };
        if let Some(directory) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(directory).map_err(io("creating its directory"))?;
        }
        let lock_path = self.path.with_extension("json.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("opening its lock file"))?;
        lock.lock().map_err(io("locking it"))?;
        // Under the lock: a corrupt file holds nothing usable and is replaced.
        let mut all = self.read_all().unwrap_or_default();
        all.entry(device.clone()).or_default().extend(entries);
        let file = CacheFile {
            format_version: FORMAT_VERSION,
            devices: all
                .into_iter()
                .map(|(device, table)| DeviceEntries {
                    device,
                    entries: table.into_iter().collect(),
                })
                .collect(),
        };
        let text = serde_json::to_string_pretty(&file).expect("the cache serialises");
        let temporary = self
            .path
            .with_extension(format!("json.{}.tmp", std::process::id()));
        let mut out = File::create(&temporary).map_err(io("creating a temporary file"))?;
        out.write_all(text.as_bytes())
            .and_then(|()| out.sync_all())
            .map_err(io("writing a temporary file"))?;
        fs::rename(&temporary, &self.path).map_err(io("replacing it"))?;
        lock.unlock().map_err(io("unlocking it"))?;
        Ok(())
    }

    fn read_all(&self) -> Result<BTreeMap<DeviceKey, TuningTable>, TuningError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(BTreeMap::new())
            }
            Err(source) => {
                return Err(TuningError::Io {
                    path: self.path.clone(),
                    action: "reading it",
                    source,
                })
            }
        };
        let corrupt = |detail: String| TuningError::Corrupt {
            path: self.path.clone(),
            detail,
        };
        let file: CacheFile = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        if file.format_version != FORMAT_VERSION {
            return Err(corrupt(format!("format version {}", file.format_version)));
        }
        Ok(file
            .devices
            .into_iter()
            .map(|d| (d.device, d.entries.into_iter().collect()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Group;

    fn device(gpu: &str) -> DeviceKey {
        DeviceKey::new(gpu, (9, 0), (13, 0))
    }

    fn key(n: usize, m: usize) -> TuningKey {
        let format = QuantFormat::new(DType::Unsigned(4), Group::Elements(128));
        TuningKey::new(format, Activation::F16, DType::F16, n, 8192, m)
    }

    fn tuned(tag: &str) -> TunedSchedule {
        TunedSchedule {
            schedule: tag.to_string(),
            us: 100.0,
            candidates: 12,
        }
    }

    #[test]
    fn the_table_entry_is_launched_where_it_fits_else_the_heuristic() {
        let format = QuantFormat::new(DType::Unsigned(4), Group::Elements(128));
        let schedule = |table: &TuningTable, m| {
            schedule_from(table, format, Activation::F16, DType::F16, 4096, 8192, m)
        };
        let heuristic = |m| DecodeSchedule::heuristic(m, 4096, 8192, format, Activation::F16);
        let mut table = TuningTable::new();
        assert_eq!(schedule(&table, 3), heuristic(3));
        table.insert(key(4096, 3), tuned("w4k2r1t1c1x"));
        assert_eq!(schedule(&table, 3), "w4k2r1t1c1x".parse().unwrap());
        assert_eq!(schedule(&table, 12), heuristic(12), "another bucket");
        // An entry that does not take the tokens (one token tile at M = 12) or splits K in a way
        // the shape does not allow (5 slices of 8192) is not launched.
        table.insert(key(4096, 12), tuned("w4k1r1t1c1x"));
        assert_eq!(schedule(&table, 12), heuristic(12));
        table.insert(key(4096, 40), tuned("w1k5r1t8c1"));
        assert_eq!(schedule(&table, 40), heuristic(40));
    }

    #[test]
    fn buckets_follow_token_tiles() {
        let buckets: Vec<usize> = [1, 8, 9, 16, 17, 32, 33, 64, 65]
            .into_iter()
            .map(token_bucket)
            .collect();
        assert_eq!(buckets, [8, 8, 16, 16, 32, 32, 64, 64, 64]);
    }

    #[test]
    fn stored_entries_are_found_for_their_device_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TuningCache::at(dir.path().join("sub").join(FILE_NAME));
        assert_eq!(cache.lookup(&device("H100"), &key(4096, 1)), None);
        cache
            .store(&device("H100"), [(key(4096, 1), tuned("w2k4r2t1c2x"))])
            .unwrap();
        cache
            .store(&device("H100"), [(key(4096, 16), tuned("w4k1r2t2c2x"))])
            .unwrap();
        let h100 = device("H100");
        assert_eq!(
            cache.lookup(&h100, &key(4096, 3)),
            Some("w2k4r2t1c2x".parse().unwrap()),
            "M = 3 is in the M <= 8 bucket"
        );
        assert_eq!(
            cache.lookup(&h100, &key(4096, 16)),
            Some("w4k1r2t2c2x".parse().unwrap())
        );
        assert_eq!(cache.lookup(&h100, &key(4096, 17)), None);
        assert_eq!(cache.lookup(&device("A100"), &key(4096, 1)), None);
        let newer_driver = DeviceKey {
            driver: "13.1".to_string(),
            ..device("H100")
        };
        assert_eq!(cache.lookup(&newer_driver, &key(4096, 1)), None);
        // Storing again replaces the entry.
        cache
            .store(&h100, [(key(4096, 1), tuned("w1k1r1t1c2x"))])
            .unwrap();
        assert_eq!(
            cache.lookup(&h100, &key(4096, 1)),
            Some("w1k1r1t1c2x".parse().unwrap())
        );
        assert_eq!(cache.load(&h100).unwrap().len(), 2);
    }

    #[test]
    fn concurrent_writers_lose_no_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::thread::scope(|scope| {
            for writer in 0..8 {
                let path = path.clone();
                scope.spawn(move || {
                    let cache = TuningCache::at(path);
                    for i in 0..10 {
                        cache
                            .store(
                                &device("H100"),
                                [(key(1000 * writer + i, 1), tuned("w2k1r1t1c1"))],
                            )
                            .unwrap();
                    }
                });
            }
        });
        let table = TuningCache::at(&path).load(&device("H100")).unwrap();
        assert_eq!(table.len(), 80);
        // No temporary file is left behind.
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn a_corrupt_file_is_reported_and_replaced_by_the_next_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, "{ not json").unwrap();
        let cache = TuningCache::at(&path);
        let error = cache.load(&device("H100")).unwrap_err().to_string();
        assert!(error.contains("is not a tuning cache"), "{error}");
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert_eq!(cache.lookup(&device("H100"), &key(4096, 1)), None);
        cache
            .store(&device("H100"), [(key(4096, 1), tuned("w2k4r2t1c2x"))])
            .unwrap();
        assert_eq!(cache.load(&device("H100")).unwrap().len(), 1);
        // A file of another format version is not trusted either.
        fs::write(&path, r#"{"format_version": 99, "devices": []}"#).unwrap();
        let error = cache.load(&device("H100")).unwrap_err().to_string();
        assert!(error.contains("format version 99"), "{error}");
    }

    #[test]
    fn unknown_tags_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TuningCache::at(dir.path().join(FILE_NAME));
        cache
            .store(&device("H100"), [(key(4096, 1), tuned("z9"))])
            .unwrap();
        assert_eq!(cache.lookup(&device("H100"), &key(4096, 1)), None);
    }
}
