//! A tool, not a check: prints the generated CUDA of a program and compiles it.
//! `ANYBIT_DUMP=examples/matmul_f16.anybit cargo test -p anybit-cuda --test codegen_dump -- --ignored --nocapture`
//! `ANYBIT_DUMP=qmm:u4:128` takes `anybit_vm::examples::quantized_matmul`; `ANYBIT_TARGET=sm_80`
//! picks the target and `ANYBIT_SASS=1` prints the SASS too.

use anybit_cuda::{compile, disassemble, generate, Target};

#[test]
#[ignore]
fn dump() {
    let Ok(path) = std::env::var("ANYBIT_DUMP") else {
        return;
    };
    let target: Target = std::env::var("ANYBIT_TARGET")
        .ok()
        .map(|t| t.parse().unwrap())
        .unwrap_or(Target::Sm90a);
    let program = if let Some(rest) = path.strip_prefix("qmm:") {
        let (dtype, group) = rest.split_once(':').unwrap();
        anybit_vm::examples::quantized_matmul(dtype.parse().unwrap(), group.parse().unwrap())
            .unwrap()
    } else {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let text = std::fs::read_to_string(root.join(&path)).unwrap();
        anybit_vm::parse(&text).unwrap()
    };
    let verified = anybit_vm::verify(&program).unwrap_or_else(|e| panic!("{e}"));
    let kernel = generate(&verified, target).unwrap_or_else(|e| panic!("{e}"));
    println!("{}", kernel.kernel_source());
    for s in &kernel.selections {
        println!("// {s}");
    }
    let module = compile(&kernel.source, &kernel.name, target).unwrap();
    if std::env::var_os("ANYBIT_SASS").is_some() {
        println!("{}", disassemble(&module.cubin).unwrap());
    }
    println!(
        "// cubin: {} bytes; log: {}",
        module.cubin.len(),
        module.log
    );
}
