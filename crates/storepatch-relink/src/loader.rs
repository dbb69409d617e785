//! A static model of how the dynamic loader (glibc's `ld.so`) finds the libraries of an ELF
//! file, used by `storepatch audit`. Nothing is executed.
//!
//! For each object, starting with the file itself and going breadth first through what it
//! loads, every `DT_NEEDED` name is:
//!
//! - satisfied when an object of that name or soname is already loaded;
//! - looked up in the object's `DT_RUNPATH`; or, if it has none, in its `DT_RPATH` and then the
//!   `DT_RPATH` of each object that loaded it (those without a `DT_RUNPATH`), as ld.so does;
//!   `$ORIGIN` and `${ORIGIN}` are expanded to the object's directory, entries with other
//!   tokens (`$LIB`, `$PLATFORM`) are skipped;
//! - then in the extra library paths given to the audit (in place of `LD_LIBRARY_PATH`, which is
//!   never read);
//! - then in the default directories (`/lib`, `/usr/lib` and the multiarch ones such as
//!   `/lib/x86_64-linux-gnu`). `/etc/ld.so.cache` is not read.
//!
//! A candidate counts only when it is an ELF file of the same class and machine, as ld.so skips
//! others. A libc object that is found nowhere is assumed to come with the dynamic linker (on Nix
//! it sits next to the interpreter, outside every default directory).
use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use storepatch_elf::ElfInfo;
use storepatch_walk::ReadPolicy;

use crate::libc::LibcNames;
use crate::runpath;
use crate::target::Target;

/// Where the loader looks after the object's own run paths.
#[derive(Debug, Clone)]
pub struct LoaderSearch {
    /// Extra directories, searched before the default ones.
    pub library_paths: Vec<PathBuf>,
    /// The loader's default directories.
    pub default_dirs: Vec<PathBuf>,
    /// libc's objects.
    pub libc: LibcNames,
}

impl Default for LoaderSearch {
    fn default() -> Self {
        let multiarch = format!("{}-linux-gnu", std::env::consts::ARCH);
        Self {
            library_paths: Vec::new(),
            default_dirs: vec![
                PathBuf::from("/lib"),
                PathBuf::from("/usr/lib"),
                Path::new("/lib").join(&multiarch),
                Path::new("/usr/lib").join(&multiarch),
            ],
            libc: LibcNames::default(),
        }
    }
}

/// A `DT_NEEDED` entry the loader would not find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// The object that needs it: the audited file or a library it loads.
    pub needed_by: PathBuf,
    /// The name wanted.
    pub name: Vec<u8>,
}

/// Resolves dependencies like ld.so; shares parsed libraries between calls and threads.
#[derive(Debug, Default)]
pub struct Loader {
    search: LoaderSearch,
    parsed: Mutex<HashMap<PathBuf, Option<Arc<ElfInfo>>>>,
}

struct Object {
    path: PathBuf,
    info: Arc<ElfInfo>,
    /// `(origin, DT_RPATH)` of the objects that loaded this one, nearest first.
    loaders: Vec<(PathBuf, Vec<u8>)>,
}

impl Loader {
    /// A loader model with these search directories.
    pub fn new(search: LoaderSearch) -> Self {
        Self {
            search,
            parsed: Mutex::new(HashMap::new()),
        }
    }

    /// Everything the loader would fail to find when loading the file at `path` (parsed as
    /// `info`), in breadth-first order.
    pub fn check(&self, path: &Path, info: &ElfInfo) -> Vec<Unresolved> {
        let target = Target::of(info);
        let mut unresolved = Vec::new();
        let mut loaded: HashSet<Vec<u8>> = HashSet::new();
        let mut visited: HashSet<PathBuf> = HashSet::new();
        if let Some(name) = path.file_name() {
            loaded.insert(name.as_bytes().to_vec());
        }
        if let Some(soname) = &info.soname {
            loaded.insert(soname.clone());
        }
        visited.insert(path.to_path_buf());
        let mut queue = VecDeque::from([Object {
            path: path.to_path_buf(),
            info: Arc::new(info.clone()),
            loaders: Vec::new(),
        }]);
        while let Some(object) = queue.pop_front() {
            let origin = object.path.parent().unwrap_or(Path::new(".")).to_path_buf();
            let mut dirs: Vec<Vec<u8>> = Vec::new();
            let mut loaders = object.loaders.clone();
            if let Some(runpath) = &object.info.runpath {
                dirs.extend(expand_all(runpath, &origin));
            } else {
                if let Some(rpath) = &object.info.rpath {
                    dirs.extend(expand_all(rpath, &origin));
                    loaders.insert(0, (origin.clone(), rpath.clone()));
                }
                for (loader_origin, rpath) in &object.loaders {
                    dirs.extend(expand_all(rpath, loader_origin));
                }
            }
            dirs.extend(
                self.search
                    .library_paths
                    .iter()
                    .chain(&self.search.default_dirs)
                    .map(|dir| dir.as_os_str().as_bytes().to_vec()),
            );
            for name in &object.info.needed {
                if name.contains(&b'/') {
                    if !Path::new(OsStr::from_bytes(name)).is_file() {
                        unresolved.push(Unresolved {
                            needed_by: object.path.clone(),
                            name: name.clone(),
                        });
                    }
                    continue;
                }
                if loaded.contains(name) {
                    continue;
                }
                let found = dirs.iter().find_map(|dir| {
                    let candidate = Path::new(OsStr::from_bytes(dir)).join(OsStr::from_bytes(name));
                    self.parse(&candidate)
                        .filter(|library| target.same_architecture(&Target::of(library)))
                        .map(|library| (candidate, library))
                });
                match found {
                    Some((library_path, library)) => {
                        loaded.insert(name.clone());
                        if let Some(soname) = &library.soname {
                            loaded.insert(soname.clone());
                        }
                        if visited.insert(library_path.clone()) {
                            queue.push_back(Object {
                                path: library_path,
                                info: library,
                                loaders: loaders.clone(),
                            });
                        }
                    }
                    None if self.search.libc.contains(name) => {}
                    None => unresolved.push(Unresolved {
                        needed_by: object.path.clone(),
                        name: name.clone(),
                    }),
                }
            }
        }
        unresolved
    }

    /// The parsed ELF file at `path`, if it is a readable ELF file; cached.
    fn parse(&self, path: &Path) -> Option<Arc<ElfInfo>> {
        if let Ok(parsed) = self.parsed.lock()
            && let Some(cached) = parsed.get(path)
        {
            return cached.clone();
        }
        let info = fs_err::metadata(path)
            .ok()
            .filter(std::fs::Metadata::is_file)
            .and_then(|metadata| {
                storepatch_walk::read(path, metadata.len(), ReadPolicy::default()).ok()
            })
            .and_then(|contents| ElfInfo::parse(&contents).ok())
            .map(Arc::new);
        if let Ok(mut parsed) = self.parsed.lock() {
            parsed.insert(path.to_path_buf(), info.clone());
        }
        info
    }
}

fn expand_all(run_path: &[u8], origin: &Path) -> Vec<Vec<u8>> {
    runpath::split(run_path)
        .iter()
        .filter_map(|entry| runpath::expand(entry, origin))
        .collect()
}
