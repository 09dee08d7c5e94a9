//! The shape of `src/codegen`: imports point one way (no circle among its files), the shared
//! core imports no lowering, and no lowering file grows past about 700 lines.
//!
//! The imports are read from the sources: every path that starts with `super::`, `self::`,
//! `crate::codegen::` or the name of a child module is followed down the module tree to the
//! deepest file it names (`crate::codegen::emitter::Emitter` is an import of `emitter.rs`,
//! `super::CodegenError` one of the parent's file). Test modules are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The most lines a file under `lower/` may have.
const LOWERING_FILE_LINES: usize = 700;

/// Files of the shared core, which must not import the walk or any lowering.
const CORE: [&str; 8] = [
    "emitter.rs",
    "element.rs",
    "error.rs",
    "layout.rs",
    "scalar.rs",
    "cast.rs",
    "prelude.rs",
    "../target.rs",
];

/// One source file: its module path (below `codegen`) and its text without test modules.
struct Source {
    file: String,
    module: Vec<String>,
    code: String,
    lines: usize,
}

fn codegen_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/codegen")
}

fn collect(dir: &Path, prefix: &str, out: &mut Vec<Source>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("UTF-8 file name")
            .to_string();
        if path.is_dir() {
            collect(&path, &format!("{prefix}{name}/"), out);
            continue;
        }
        let Some(stem) = name.strip_suffix(".rs") else {
            continue;
        };
        let text = std::fs::read_to_string(&path).expect("readable source");
        let mut module: Vec<String> = prefix
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if stem != "mod" {
            module.push(stem.to_string());
        }
        out.push(Source {
            file: format!("{prefix}{name}"),
            module,
            code: without_tests_and_comments(&text),
            lines: text.lines().count(),
        });
    }
}

/// The code before `#[cfg(test)]`, without `//` comments (doc comments name paths too) and
/// without the paths of visibilities (`pub(in crate::codegen)` imports nothing).
fn without_tests_and_comments(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    code.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .map(|line| line.replace("pub(in crate::codegen)", "pub"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path in `code` that starts with a segment followed by `::`, braces expanded one level
/// (`use a::{b, c::d}` gives `a::b` and `a::c::d`).
fn paths(code: &str) -> Vec<Vec<String>> {
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !is_ident(bytes[i]) || (i > 0 && (is_ident(bytes[i - 1]) || bytes[i - 1] == b':')) {
            i += 1;
            continue;
        }
        // A path: ident (:: ident)* possibly ending in ::{ … }.
        let mut segments = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < bytes.len() && is_ident(bytes[j]) {
                j += 1;
            }
            segments.push(code[start..j].to_string());
            if code[j..].starts_with("::") {
                j += 2;
                if code[j..].starts_with('{') {
                    let close = code[j..].find('}').map_or(code.len(), |k| j + k);
                    for item in code[j + 1..close].split(',') {
                        let item: Vec<String> = item
                            .split("::")
                            .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
                            .filter(|s| !s.is_empty())
                            .collect();
                        if !item.is_empty() {
                            let mut full = segments.clone();
                            full.extend(item);
                            out.push(full);
                        }
                    }
                    j = close;
                    break;
                }
                if j < bytes.len() && is_ident(bytes[j]) {
                    continue;
                }
            }
            if segments.len() > 1 {
                out.push(segments.clone());
            }
            break;
        }
        i = j.max(i + 1);
    }
    out
}

/// The file (index) that `path`, written in module `from`, names: the deepest module it walks
/// through. `None` for paths outside `codegen` and for names that are not modules.
fn resolve(
    path: &[String],
    from: &[String],
    modules: &BTreeMap<Vec<String>, usize>,
) -> Option<usize> {
    let mut at: Vec<String>;
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            if path.get(1).map(String::as_str) == Some("codegen") {
                at = Vec::new();
                rest = &path[2..];
            } else if path.get(1).map(String::as_str) == Some("target") {
                return modules
                    .get(&vec!["..".to_string(), "target".to_string()])
                    .copied();
            } else {
                return None;
            }
        }
        Some("super") => {
            at = from.to_vec();
            while rest.first().map(String::as_str) == Some("super") {
                at.pop()?;
                rest = &rest[1..];
            }
        }
        Some("self") => {
            at = from.to_vec();
            rest = &path[1..];
        }
        Some(first) => {
            let mut child = from.to_vec();
            child.push(first.to_string());
            if !modules.contains_key(&child) {
                return None;
            }
            at = from.to_vec();
        }
        None => return None,
    }
    for segment in rest {
        if segment == "self" {
            break;
        }
        let mut next = at.clone();
        next.push(segment.clone());
        if modules.contains_key(&next) {
            at = next;
        } else {
            break;
        }
    }
    modules.get(&at).copied()
}

struct Graph {
    sources: Vec<Source>,
    /// imports[i]: the files file i imports (itself excluded).
    imports: Vec<BTreeSet<usize>>,
}

fn graph() -> Graph {
    let mut sources = Vec::new();
    collect(&codegen_dir(), "", &mut sources);
    // `Target` lives beside codegen; it is part of the graph so that reaching up to the NVRTC
    // module would show.
    let target = codegen_dir().join("../target.rs");
    let text = std::fs::read_to_string(&target).expect("src/target.rs");
    sources.push(Source {
        file: "../target.rs".into(),
        module: vec!["..".into(), "target".into()],
        code: without_tests_and_comments(&text),
        lines: text.lines().count(),
    });
    let modules: BTreeMap<Vec<String>, usize> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| (s.module.clone(), i))
        .collect();
    let imports = sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            paths(&s.code)
                .iter()
                .filter_map(|p| resolve(p, &s.module, &modules))
                .filter(|&j| j != i)
                .collect()
        })
        .collect();
    Graph { sources, imports }
}

impl Graph {
    fn index(&self, file: &str) -> usize {
        self.sources
            .iter()
            .position(|s| s.file == file)
            .unwrap_or_else(|| panic!("no file {file}"))
    }

    fn imports(&self, from: &str, to: &str) -> bool {
        self.imports[self.index(from)].contains(&self.index(to))
    }

    /// A circle of imports, as file names, if there is one.
    fn circle(&self) -> Option<Vec<String>> {
        // 0: unseen, 1: on the stack, 2: done.
        let mut state = vec![0u8; self.sources.len()];
        let mut stack = Vec::new();
        fn visit(
            g: &Graph,
            i: usize,
            state: &mut [u8],
            stack: &mut Vec<usize>,
        ) -> Option<Vec<String>> {
            state[i] = 1;
            stack.push(i);
            for &j in &g.imports[i] {
                if state[j] == 1 {
                    let start = stack.iter().position(|&k| k == j).unwrap_or(0);
                    let mut names: Vec<String> = stack[start..]
                        .iter()
                        .map(|&k| g.sources[k].file.clone())
                        .collect();
                    names.push(g.sources[j].file.clone());
                    return Some(names);
                }
                if state[j] == 0 {
                    if let Some(circle) = visit(g, j, state, stack) {
                        return Some(circle);
                    }
                }
            }
            stack.pop();
            state[i] = 2;
            None
        }
        (0..self.sources.len()).find_map(|i| {
            if state[i] == 0 {
                visit(self, i, &mut state, &mut stack)
            } else {
                None
            }
        })
    }
}

#[test]
fn imports_are_read_from_the_sources() {
    // Known edges in each direction the layers allow, so that the checks below cannot pass
    // by reading nothing.
    let g = graph();
    assert!(g.imports("mod.rs", "program.rs"));
    assert!(g.imports("program.rs", "lower/memory/global.rs"));
    assert!(g.imports("program.rs", "lower/elementwise.rs"));
    assert!(g.imports("lower/memory/copy.rs", "lower/memory/vector.rs"));
    assert!(g.imports("lower/convert.rs", "cast.rs"));
    assert!(g.imports("lower/dot.rs", "emitter.rs"));
    assert!(g.imports("emitter.rs", "error.rs"));
    assert!(g.imports("emitter.rs", "../target.rs"));
    assert!(!g.imports("emitter.rs", "program.rs"));
    let walked_up = resolve(
        &["super".into(), "super".into(), "program".into(), "x".into()],
        &["lower".into(), "dot".into()],
        &g.sources
            .iter()
            .enumerate()
            .map(|(i, s)| (s.module.clone(), i))
            .collect(),
    );
    assert_eq!(walked_up, Some(g.index("program.rs")));
}

#[test]
fn no_circle_of_imports_among_the_codegen_files() {
    let g = graph();
    assert!(
        g.sources.len() >= 15,
        "found only {} files",
        g.sources.len()
    );
    if let Some(circle) = g.circle() {
        panic!("a circle of imports: {}", circle.join(" -> "));
    }
}

#[test]
fn the_core_imports_no_lowering_and_not_the_walk() {
    let g = graph();
    for core in CORE {
        for &j in &g.imports[g.index(core)] {
            let target = &g.sources[j].file;
            assert!(
                !target.starts_with("lower/") && target != "program.rs" && target != "mod.rs",
                "{core} imports {target}"
            );
        }
    }
}

#[test]
fn no_lowering_file_is_longer_than_700_lines() {
    let g = graph();
    let lowering: Vec<&Source> = g
        .sources
        .iter()
        .filter(|s| s.file.starts_with("lower/"))
        .collect();
    assert!(
        lowering.len() >= 5,
        "found only {} lowering files",
        lowering.len()
    );
    for s in lowering {
        assert!(
            s.lines <= LOWERING_FILE_LINES,
            "{} has {} lines",
            s.file,
            s.lines
        );
    }
}
