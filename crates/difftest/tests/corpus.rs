//! The corpus (`corpus/*.anybit`, see `docs/testing.md`): every file parses, verifies, runs on
//! the interpreter and meets the expectations of its run lines; its generated CUDA matches the
//! blessed snapshot beside it (`ANYBIT_BLESS=1` rewrites the snapshots); the examples are in
//! the corpus unchanged; every instruction and statement kind appears in some file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anybit_difftest::corpus::{
    bless_requested, check_snapshot, checkout_corpus_dir, corpus_paths, stale_snapshots,
    CorpusError, CorpusFile, SnapshotOutcome, BLESS_COMMAND,
};
use anybit_vm::{BinaryOp, CmpOp, Inst, ReduceOp, Stmt, StmtKind, UnaryOp};

/// Fewest files the corpus holds.
const MINIMUM_FILES: usize = 30;

fn paths() -> Vec<PathBuf> {
    corpus_paths(&checkout_corpus_dir()).unwrap_or_else(|error| panic!("{error}"))
}

/// Loads every file (all errors at once).
fn files() -> Vec<CorpusFile> {
    let (files, errors): (Vec<_>, Vec<_>) = paths()
        .iter()
        .map(|path| CorpusFile::load(path))
        .partition(Result::is_ok);
    let errors: Vec<String> = errors
        .into_iter()
        .filter_map(|error| error.err())
        .map(|error| error.to_string())
        .collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    files.into_iter().filter_map(Result::ok).collect()
}

/// Applies `check` to every file on every core; returns the errors in file order.
fn on_every_file(
    files: &[CorpusFile],
    check: impl Fn(&CorpusFile) -> Vec<CorpusError> + Sync,
) -> Vec<String> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut found: Vec<(usize, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut found = Vec::new();
                    loop {
                        let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(file) = files.get(index) else {
                            return found;
                        };
                        found.extend(
                            check(file)
                                .into_iter()
                                .map(|error| (index, error.to_string())),
                        );
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("a corpus worker panicked"))
            .collect()
    });
    found.sort();
    found.into_iter().map(|(_, error)| error).collect()
}

#[test]
fn every_file_runs_on_the_interpreter_and_meets_its_expectations() {
    let files = files();
    assert!(
        files.len() >= MINIMUM_FILES,
        "the corpus holds {} files, fewer than {MINIMUM_FILES}",
        files.len()
    );
    let failures = on_every_file(&files, CorpusFile::check_runs);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn generated_cuda_matches_the_blessed_snapshots() {
    let files = files();
    let bless = bless_requested();
    let blessed = std::sync::Mutex::new(Vec::new());
    let mut failures = on_every_file(&files, |file| match check_snapshot(file, bless) {
        Ok(SnapshotOutcome::Matches) => Vec::new(),
        Ok(SnapshotOutcome::Blessed) => {
            blessed.lock().expect("no worker panics").push(file.name());
            Vec::new()
        }
        Err(error) => vec![error],
    });
    let dir = checkout_corpus_dir();
    for stale in stale_snapshots(&dir).unwrap_or_else(|error| panic!("{error}")) {
        if bless {
            std::fs::remove_file(&stale).unwrap_or_else(|error| panic!("{error}"));
            eprintln!("removed {}", stale.display());
        } else {
            failures.push(format!(
                "{}: a snapshot without a program beside it; delete it (`{BLESS_COMMAND}` does)",
                stale.display()
            ));
        }
    }
    for name in blessed.into_inner().expect("no worker panics") {
        eprintln!("blessed the CUDA of {name}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `corpus/NAME.anybit` is `examples/NAME.anybit` byte for byte, after its leading `//` lines.
#[test]
fn the_examples_are_in_the_corpus_unchanged() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let example_paths = corpus_paths(&examples).unwrap_or_else(|error| panic!("{error}"));
    assert!(
        !example_paths.is_empty(),
        "no examples in {}",
        examples.display()
    );
    for example in example_paths {
        let name = example.file_name().expect("a file");
        let copy = checkout_corpus_dir().join(name);
        let original = std::fs::read_to_string(&example).unwrap();
        let text = std::fs::read_to_string(&copy).unwrap_or_else(|error| {
            panic!(
                "{}: {error}; every example is in the corpus with run lines",
                copy.display()
            )
        });
        let head = text.strip_suffix(original.as_str()).unwrap_or_else(|| {
            panic!(
                "{} must end with the text of {} exactly (copy the example below the run lines)",
                copy.display(),
                example.display()
            )
        });
        for line in head.lines() {
            assert!(
                line.starts_with("//") && !line.starts_with("///"),
                "{}: only `//` lines may precede the example's text, not `{line}`",
                copy.display()
            );
        }
    }
}

fn collect_kinds(body: &[Stmt], kinds: &mut BTreeSet<String>) {
    for stmt in body {
        match &stmt.kind {
            StmtKind::Let { .. } => {
                kinds.insert("let".into());
            }
            StmtKind::For(for_loop) => {
                kinds.insert("for".into());
                collect_kinds(&for_loop.body, kinds);
            }
            StmtKind::If {
                then_body,
                else_body,
                ..
            } => {
                kinds.insert("if".into());
                if !else_body.is_empty() {
                    kinds.insert("else".into());
                }
                collect_kinds(then_body, kinds);
                collect_kinds(else_body, kinds);
            }
            StmtKind::Inst(inst) => {
                kinds.insert(inst.mnemonic().into());
            }
        }
    }
}

#[test]
fn the_corpus_covers_every_instruction_and_statement() {
    let mut used = BTreeSet::new();
    for file in files() {
        collect_kinds(&file.program().body, &mut used);
        if file.program().grid.len() == 3 {
            used.insert("3-D grid".to_string());
        }
    }
    let mut wanted: Vec<&str> = vec![
        "let",
        "for",
        "if",
        "else",
        "3-D grid",
        "alloc_register",
        "alloc_shared",
        "free_shared",
        "view_global",
        "load_global",
        "store_global",
        "load_shared",
        "store_shared",
        "copy_async",
        "commit_group",
        "wait_group",
        "barrier",
        "view",
        "cast",
        "cast_planes",
        "where",
        "dot",
    ];
    // `print` is left out: its output belongs to the executor, and the GPU check would print.
    wanted.extend(UnaryOp::ALL.map(UnaryOp::name));
    wanted.extend(BinaryOp::ALL.map(BinaryOp::name));
    wanted.extend(CmpOp::ALL.map(CmpOp::name));
    wanted.extend(ReduceOp::ALL.map(ReduceOp::name));
    let missing: Vec<&str> = wanted
        .into_iter()
        .filter(|kind| !used.contains(*kind))
        .collect();
    assert!(
        missing.is_empty(),
        "no corpus file uses {missing:?}; add one (docs/testing.md says how)"
    );
    // Keep the list above complete: a new instruction is one the corpus must cover.
    let _exhaustive = |inst: &Inst| match inst {
        Inst::AllocRegister { .. }
        | Inst::AllocShared { .. }
        | Inst::FreeShared { .. }
        | Inst::ViewGlobal { .. }
        | Inst::LoadGlobal { .. }
        | Inst::StoreGlobal { .. }
        | Inst::LoadShared { .. }
        | Inst::StoreShared { .. }
        | Inst::CopyAsync { .. }
        | Inst::CommitGroup
        | Inst::WaitGroup { .. }
        | Inst::Barrier
        | Inst::View { .. }
        | Inst::Cast { .. }
        | Inst::CastPlanes { .. }
        | Inst::Unary { .. }
        | Inst::Binary { .. }
        | Inst::Compare { .. }
        | Inst::Where { .. }
        | Inst::Dot { .. }
        | Inst::Reduce { .. }
        | Inst::Print { .. } => (),
    };
}
