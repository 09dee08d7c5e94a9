//! The `anybit` command as a user runs it.

mod common;

use std::process::Command;

use common::{anybit, stdout};

#[test]
fn dtype_show_prints_every_code_in_order() {
    let output = anybit(&["dtype", "show", "f4e2m1"]);
    assert!(output.status.success());
    let expected = "0 0\n1 0.5\n2 1\n3 1.5\n4 2\n5 3\n6 4\n7 6\n\
                    8 -0\n9 -0.5\n10 -1\n11 -1.5\n12 -2\n13 -3\n14 -4\n15 -6\n";
    assert_eq!(stdout(&output), expected);
}

#[test]
fn dtype_show_prints_nan_infinity_and_integers() {
    let e4m3 = stdout(&anybit(&["dtype", "show", "f8e4m3"]));
    let lines: Vec<&str> = e4m3.lines().collect();
    assert_eq!(lines.len(), 256);
    assert_eq!(lines[126], "126 448");
    assert_eq!(lines[127], "127 NaN");
    assert_eq!(lines[1], "1 0.001953125");
    let e5m2 = stdout(&anybit(&["dtype", "show", "f8e5m2"]));
    assert_eq!(e5m2.lines().nth(124), Some("124 inf"));
    assert_eq!(e5m2.lines().nth(252), Some("252 -inf"));
    let i3 = stdout(&anybit(&["dtype", "show", "i3"]));
    assert_eq!(i3, "0 0\n1 1\n2 2\n3 3\n4 -4\n5 -3\n6 -2\n7 -1\n");
}

#[test]
fn dtype_show_rejects_bad_names_and_wide_types() {
    let output = anybit(&["dtype", "show", "f6e3m3"]);
    assert!(!output.status.success());
    let message = String::from_utf8(output.stderr).unwrap();
    assert!(message.contains("unknown data type `f6e3m3`"), "{message}");
    assert!(message.contains("f{bits}e{E}m{M}"), "{message}");
    let output = anybit(&["dtype", "show", "bf16"]);
    assert!(!output.status.success());
    assert!(String::from_utf8(output.stderr)
        .unwrap()
        .contains("at most 8 bits"));
}

#[test]
fn dtypes_lists_every_type_with_its_limits() {
    let listing = stdout(&anybit(&["dtypes"]));
    let row = |name: &str| {
        listing
            .lines()
            .find(|line| line.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row("f8e4m3")[..5],
        ["f8e4m3", "8", "-448", "448", "1.953125e-3"]
    );
    assert_eq!(row("f6e3m2")[..5], ["f6e3m2", "6", "-28", "28", "6.25e-2"]);
    assert_eq!(row("u3")[..5], ["u3", "3", "0", "7", "-"]);
    assert_eq!(row("f8e7m0")[4], "-");
    assert_eq!(listing.lines().count(), 1 + 51);
}

#[test]
fn doctor_reports_without_failing() {
    // Pointing ANYBIT_CUDA_HOME at nothing must not break the report.
    let output = Command::new(env!("CARGO_BIN_EXE_anybit"))
        .arg("doctor")
        .env("ANYBIT_CUDA_HOME", "/nonexistent/cuda")
        .output()
        .unwrap();
    assert!(output.status.success());
    let report = stdout(&output);
    assert!(report.contains("CUDA driver: "), "{report}");
    assert!(report.contains("CUDA toolkit: "), "{report}");
}

fn repository_file(relative: &str) -> String {
    format!("{}/../../{relative}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_accepts_every_example_and_reports_errors_with_positions() {
    let examples: Vec<String> = [
        "vector_add",
        "matmul_f16",
        "softmax",
        "quantized_matmul_u4_g128",
    ]
    .iter()
    .map(|name| repository_file(&format!("examples/{name}.anybit")))
    .collect();
    let mut arguments = vec!["check"];
    arguments.extend(examples.iter().map(String::as_str));
    let output = anybit(&arguments);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout(&output)
            .lines()
            .filter(|line| line.ends_with(")"))
            .count(),
        4
    );

    let directory = std::env::temp_dir().join(format!("anybit-cli-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let bad = directory.join("bad.anybit");
    std::fs::write(
        &bad,
        "program p()\ngrid(1)\nthreads(32)\n{\n    %x = add(%y, 1);\n}\n",
    )
    .unwrap();
    let output = anybit(&["check", bad.to_str().unwrap()]);
    assert!(!output.status.success());
    let message = String::from_utf8(output.stderr).unwrap();
    assert!(
        message.contains("bad.anybit:5:5: `%y` is not a defined tensor"),
        "{message}"
    );
    let missing = anybit(&["check", "/nonexistent/x.anybit"]);
    assert!(String::from_utf8(missing.stderr)
        .unwrap()
        .contains("cannot read /nonexistent/x.anybit"));
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn fmt_prints_canonical_text_and_rewrites_in_place() {
    let example = repository_file("examples/vector_add.anybit");
    let canonical = std::fs::read_to_string(&example).unwrap();
    let output = anybit(&["fmt", &example]);
    assert_eq!(
        stdout(&output),
        canonical,
        "examples are stored in canonical form"
    );
    assert!(anybit(&["fmt", "--check", &example]).status.success());

    let directory = std::env::temp_dir().join(format!("anybit-fmt-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let messy = directory.join("messy.anybit");
    // Same program with different spacing and line breaks.
    let spaced = canonical.replace("    ", "\t  ").replace(", ", " ,  ");
    std::fs::write(&messy, &spaced).unwrap();
    let path = messy.to_str().unwrap();
    let check = anybit(&["fmt", "--check", path]);
    assert!(!check.status.success());
    assert!(String::from_utf8(check.stderr)
        .unwrap()
        .contains("not in canonical form"));
    assert!(anybit(&["fmt", "--write", path]).status.success());
    assert_eq!(std::fs::read_to_string(&messy).unwrap(), canonical);
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn run_executes_a_program_on_the_interpreter() {
    let example = repository_file("examples/vector_add.anybit");
    let saved = std::env::temp_dir().join(format!("anybit-run-{}.bin", std::process::id()));
    let output = anybit(&[
        "run",
        &example,
        "--arg",
        "n=8",
        "--arg",
        "a=values:1,2,3,4,5,6,7,8",
        "--arg",
        "b=values:0.5,0.25,-3,100,1e5,0,0,-8",
        "--arg",
        "c=zeros:8",
        "--show",
        "c",
        "--save",
        &format!("c={}", saved.display()),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // 1e5 is beyond f16's range: it encodes to infinity (IEEE f16).
    assert_eq!(
        stdout(&output),
        "c (f16, 8 elements): 1.5 2.25 0 104 inf 6 7 0\n"
    );
    let bytes = std::fs::read(&saved).unwrap();
    assert_eq!(
        &bytes[..4],
        &[0x00, 0x3e, 0x80, 0x40],
        "1.5 and 2.25 as f16"
    );
    std::fs::remove_file(&saved).unwrap();
}

#[test]
fn run_explains_bad_arguments() {
    let example = repository_file("examples/vector_add.anybit");
    let error = |arguments: &[&str]| {
        let mut all = vec!["run", example.as_str()];
        all.extend_from_slice(arguments);
        let output = anybit(&all);
        assert!(!output.status.success());
        String::from_utf8(output.stderr).unwrap()
    };
    assert!(error(&["--arg", "q=3"]).contains("no parameter `q`; its parameters are a, b, c, n"));
    assert!(error(&["--arg", "a=ones:3"]).contains("zeros:N, random:N, values:1,2,3 or file:PATH"));
    assert!(error(&["--arg", "n=eight"]).contains("`n` is an i32, but `eight` is not an integer"));
    let broken_promise = error(&[
        "--arg",
        "n=7",
        "--arg",
        "a=zeros:8",
        "--arg",
        "b=zeros:8",
        "--arg",
        "c=zeros:8",
    ]);
    assert!(
        broken_promise.contains("breaks its promise `multiple_of 8`"),
        "{broken_promise}"
    );
    let short = error(&[
        "--arg",
        "n=8",
        "--arg",
        "a=values:1,2,3",
        "--arg",
        "b=zeros:8",
        "--arg",
        "c=zeros:8",
    ]);
    assert!(short.contains("outside its 3-element buffer"), "{short}");
}

#[test]
fn compile_emits_cuda_ptx_cubin_and_sass() {
    let matmul = repository_file("examples/matmul_f16.anybit");
    let cuda = stdout(&anybit(&["compile", &matmul, "--emit", "cuda"]));
    assert!(cuda.contains("extern \"C\" __global__"), "{cuda}");
    assert!(cuda.contains("matmul_f16"));
    let ptx = anybit(&["compile", &matmul, "--arch", "sm_80", "--emit", "ptx"]);
    assert!(
        ptx.status.success(),
        "{}",
        String::from_utf8_lossy(&ptx.stderr)
    );
    assert!(stdout(&ptx).contains(".target sm_80"));
    let sass = stdout(&anybit(&["compile", &matmul, "--emit", "sass"]));
    assert!(sass.contains("HMMA"), "tensor-core instructions expected");
    assert!(sass.contains("LDGSTS"), "cp.async expected");
    let cubin = std::env::temp_dir().join(format!("anybit-compile-{}.cubin", std::process::id()));
    let output = anybit(&[
        "compile",
        &matmul,
        "--emit",
        "cubin",
        "-o",
        cubin.to_str().unwrap(),
    ]);
    assert!(output.status.success());
    assert_eq!(&std::fs::read(&cubin).unwrap()[..4], b"\x7fELF");
    std::fs::remove_file(&cubin).unwrap();

    let refused = anybit(&["compile", &matmul, "--emit", "cubin"]);
    assert!(String::from_utf8(refused.stderr)
        .unwrap()
        .contains("name a file with -o"));
    let wrong_arch = anybit(&["compile", &matmul, "--arch", "sm_75"]);
    assert!(String::from_utf8(wrong_arch.stderr)
        .unwrap()
        .contains("valid targets are sm_80, sm_86, sm_89, sm_90 and sm_90a"));
}

#[test]
fn run_on_the_gpu_explains_a_missing_driver() {
    if !std::path::Path::new("/dev/nvidiactl").exists() {
        let example = repository_file("examples/vector_add.anybit");
        let output = anybit(&[
            "run",
            &example,
            "--device",
            "gpu",
            "--arg",
            "n=8",
            "--arg",
            "a=zeros:8",
            "--arg",
            "b=zeros:8",
            "--arg",
            "c=zeros:8",
        ]);
        assert!(!output.status.success());
        let message = String::from_utf8(output.stderr).unwrap();
        assert!(message.contains("no CUDA driver"), "{message}");
    }
}

#[test]
fn run_verifies_before_it_runs_on_either_device() {
    let directory = std::env::temp_dir().join(format!("anybit-run-bad-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let bad = directory.join("bad.anybit");
    std::fs::write(
        &bad,
        "program p(x: ptr<f32>)\ngrid(1)\nthreads(32)\n{\n    %g = view_global(x, [32], [1]);\n    %v = load_global(%g[0], spatial(32));\n    %w = exp(%v);\n    %i = cast(%w, i8);\n    %j = exp(%i);\n}\n",
    )
    .unwrap();
    // The verifier's error comes first on both devices (the GPU one needs no driver for it).
    for device in ["cpu", "gpu"] {
        let output = anybit(&[
            "run",
            bad.to_str().unwrap(),
            "--device",
            device,
            "--arg",
            "x=zeros:32",
        ]);
        assert!(!output.status.success(), "{device}");
        let message = String::from_utf8(output.stderr).unwrap();
        assert!(
            message.contains("bad.anybit:9:5: `exp` is not defined on i8: it needs a float type"),
            "{device}: {message}"
        );
    }
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn run_refuses_a_buffer_it_cannot_make_with_a_message() {
    let output = anybit(&[
        "run",
        "../../examples/vector_add.anybit",
        "--arg",
        "n=8",
        "--arg",
        "a=random:100000000000",
        "--arg",
        "b=random:8",
        "--arg",
        "c=zeros:8",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("100000000000 elements of f16 take 200000000000 bytes"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_anybit"))
        .args(["dtypes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the anybit binary runs");
    // Close the reading end before anything is read.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{:?}", output.status);
    assert_eq!(String::from_utf8(output.stderr).unwrap(), "");
}

#[test]
fn kernel_show_prints_a_checked_program_and_refuses_what_no_kernel_takes() {
    let output = anybit(&[
        "kernel", "show", "--wtype", "u3", "--zeros", "--m", "7", "--n", "4096", "--k", "4096",
    ]);
    assert!(output.status.success());
    let program = stdout(&output);
    let heuristic = "qmm_decode_u3_f16_g128_sf16_z_w4k4r1t1c1px";
    assert!(
        program.contains(&format!("program {heuristic}(")),
        "{program}"
    );
    let file = tempfile::NamedTempFile::with_suffix(".anybit").unwrap();
    std::fs::write(file.path(), &program).unwrap();
    let check = anybit(&["check", file.path().to_str().unwrap()]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let refused = |arguments: &[&str], expected: &str| {
        let output = anybit(arguments);
        assert!(!output.status.success(), "{arguments:?}");
        let message = String::from_utf8(output.stderr).unwrap();
        assert!(message.contains(expected), "{message}");
    };
    let base = [
        "kernel", "show", "--wtype", "u4", "--n", "4096", "--k", "8192",
    ];
    refused(
        &[&base[..], &["--m", "65"]].concat(),
        "M = 65: the decode kernels take 1 to 64 tokens",
    );
    refused(
        &[&base[..], &["--m", "9", "--schedule", "w4k1r1t1c1"]].concat(),
        "schedule w4k1r1t1c1 takes at most 8 tokens, and M = 9",
    );
    refused(
        &[&base[..], &["--schedule", "w1k5r1t1c1"]].concat(),
        "schedule w1k5r1t1c1 splits K = 8192 over 5 warps: each slice must be whole chunks of \
         64 columns and whole groups; K splits that work here: 1, 2, 4, 8, 16",
    );
}
