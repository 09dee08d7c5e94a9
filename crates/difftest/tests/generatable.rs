//! Verified means generatable, checked without a GPU: random programs of the difftest generator
//! pass the verifier, generate CUDA for sm_80 and sm_90a, and NVRTC compiles that CUDA (PTX and
//! cubin, so `ptxas` checks the inline PTX too). A program that verifies but fails to generate or
//! compile fails the test, which prints the program's text.
//!
//! NVRTC takes about 0.3 s per kernel and target, so kernels are compiled in batches (one
//! translation unit per batch and target, the prelude once) on every core; a failing batch is
//! compiled again kernel by kernel to name the programs at fault. Needs the toolkit that
//! `scripts/install-cuda-wheels` installs, like the cuda crate's tests.

use anybit_cuda::{compile, generate, GeneratedKernel, Target};
use anybit_difftest::{random_program, RandomProgram};
use rand::prelude::*;

/// How many random programs are checked: 200 programs for two targets take about 100 s of CPU,
/// a minute on two cores.
const PROGRAMS: u64 = 200;
/// Kernels per NVRTC call.
const BATCH: usize = 24;
/// Program `i` is drawn from a generator seeded with `FIRST_SEED + i`, so a failure names a
/// seed that reproduces it alone.
const FIRST_SEED: u64 = 0x5eed_0000;
const TARGETS: [Target; 2] = [Target::Sm80, Target::Sm90a];

/// Seeds of programs known to verify but not to generate or compile, with the reason. Each entry
/// is a bug to fix, not a rule; none is known today.
const KNOWN_FAILURES: &[(u64, &str)] = &[];

fn program(seed: u64) -> RandomProgram {
    random_program(&mut StdRng::seed_from_u64(seed), seed as usize)
}

fn describe(seed: u64, generated: &RandomProgram) -> String {
    format!(
        "seed {seed} ({})\n{}",
        generated.description,
        anybit_vm::print(&generated.program)
    )
}

/// The prelude every generated source starts with (the part before the kernel).
fn prelude(kernel: &GeneratedKernel) -> &str {
    &kernel.source[..kernel.source.len() - kernel.kernel_source().len()]
}

/// Compiles `kernels` as one source; on failure compiles each alone and returns one message per
/// kernel NVRTC rejects.
fn compile_batch(
    kernels: &[(u64, GeneratedKernel)],
    target: Target,
    programs: &[(u64, RandomProgram)],
) -> Vec<String> {
    let mut source = prelude(&kernels[0].1).to_string();
    for (_, kernel) in kernels {
        source.push_str(kernel.kernel_source());
    }
    if compile(&source, "random_batch", target).is_ok() {
        return Vec::new();
    }
    let mut failures = Vec::new();
    for (seed, kernel) in kernels {
        if let Err(error) = compile(&kernel.source, &kernel.name, target) {
            let generated = &programs.iter().find(|(s, _)| s == seed).expect("drawn").1;
            failures.push(format!(
                "NVRTC rejects the CUDA for {target} of {}\n{error}",
                describe(*seed, generated)
            ));
        }
    }
    if failures.is_empty() {
        failures.push(format!(
            "the batch of seeds {:?} fails to compile for {target} although each kernel compiles alone",
            kernels.iter().map(|(seed, _)| seed).collect::<Vec<_>>()
        ));
    }
    failures
}

#[test]
fn random_programs_that_verify_generate_and_compile_for_sm80_and_sm90a() {
    anybit_cuda::load_nvrtc()
        .unwrap_or_else(|error| panic!("{error}\n(scripts/install-cuda-wheels installs NVRTC)"));
    let known = |seed: u64| KNOWN_FAILURES.iter().any(|(known, _)| *known == seed);
    let programs: Vec<(u64, RandomProgram)> = (FIRST_SEED..FIRST_SEED + PROGRAMS)
        .filter(|seed| !known(*seed))
        .map(|seed| (seed, program(seed)))
        .collect();
    let mut failures = Vec::new();
    // (target, batch of kernels) work items, shared by one worker per core.
    let mut work: Vec<(Target, Vec<(u64, GeneratedKernel)>)> = Vec::new();
    for target in TARGETS {
        let mut kernels = Vec::new();
        for (seed, generated) in &programs {
            let verified = match anybit_vm::verify(&generated.program) {
                Ok(verified) => verified,
                Err(error) => {
                    failures.push(format!(
                        "the generator promises programs that verify: {error}\n{}",
                        describe(*seed, generated)
                    ));
                    continue;
                }
            };
            match generate(&verified, target) {
                Ok(kernel) => kernels.push((*seed, kernel)),
                Err(error) => failures.push(format!(
                    "a verified program does not generate for {target}: {error}\n{}",
                    describe(*seed, generated)
                )),
            }
        }
        for batch in kernels.chunks(BATCH) {
            work.push((target, batch.to_vec()));
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let compile_failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut found = Vec::new();
                    loop {
                        let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((target, kernels)) = work.get(index) else {
                            return found;
                        };
                        found.extend(compile_batch(kernels, *target, &programs));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("a compile worker panicked"))
            .collect()
    });
    failures.extend(compile_failures);
    assert!(
        failures.is_empty(),
        "{} failures among {} random programs (add a seed to KNOWN_FAILURES only with a reason):\n\n{}",
        failures.len(),
        programs.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_checked_programs_cover_every_body_the_generator_draws() {
    // The count above is only worth its time if the programs differ: every kind of body shows up.
    let mut bodies = std::collections::BTreeSet::new();
    for seed in FIRST_SEED..FIRST_SEED + PROGRAMS {
        let generated = program(seed);
        let body = generated.description.rsplit(", ").next().unwrap_or("");
        bodies.insert(body.split('(').next().unwrap_or("").to_string());
    }
    let expected = [
        "Cast",
        "CompareWhere",
        "FloatArithmetic",
        "IntegerArithmetic",
        "RowMaxSubtract",
        "RowSum",
        "ViewRoundTrip",
    ];
    assert_eq!(
        bodies.iter().map(String::as_str).collect::<Vec<_>>(),
        expected
    );
}
