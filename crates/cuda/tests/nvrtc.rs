//! NVRTC compiles to machine code without a GPU; the cache and the diagnostics behave.
//! Needs the toolkit that `scripts/install-cuda-wheels` installs (scripts/test does it).

use anybit_cuda::{compile, disassemble, CompileError, KernelCache, Target};

const SCALE: &str = r#"
#include <cuda_fp16.h>
extern "C" __global__ void scale(const __half* in, __half* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __hmul(in[i], __float2half(2.0f));
}
"#;

#[test]
fn compiles_to_cubin_for_every_target_and_disassembles() {
    for target in Target::ALL {
        let module = compile(SCALE, "scale", target).unwrap();
        assert_eq!(&module.cubin[..4], b"\x7fELF", "{target}");
        assert!(module.ptx.contains(".entry scale"), "{target}");
        assert!(
            module.ptx.contains(&format!(".target {}", target.name())),
            "{target}"
        );
        let sass = disassemble(&module.cubin).unwrap();
        assert!(sass.contains("Function : scale"), "{target}: {sass}");
        assert!(
            sass.contains("HMUL2") || sass.contains("HMUL"),
            "{target}: {sass}"
        );
    }
}

#[test]
fn diagnostics_show_the_offending_line() {
    let source = "extern \"C\" __global__ void broken(int* p) {\n    p[0] = undefined_name;\n}\n";
    let error = compile(source, "broken", Target::Sm90a).unwrap_err();
    let CompileError::Rejected { diagnostics, .. } = &error else {
        panic!("{error}");
    };
    assert!(diagnostics.contains("broken.cu(2): error"), "{diagnostics}");
    assert!(
        diagnostics.contains("    |     p[0] = undefined_name;"),
        "{diagnostics}"
    );
    assert!(error
        .to_string()
        .starts_with("NVRTC could not compile `broken` for sm_90a"));
}

#[test]
fn targets_parse_and_reject_unknown_names() {
    assert_eq!("sm_90a".parse::<Target>(), Ok(Target::Sm90a));
    let message = "sm_75".parse::<Target>().unwrap_err().to_string();
    assert_eq!(
        message,
        "unknown target `sm_75`; valid targets are sm_80, sm_86, sm_89, sm_90 and sm_90a"
    );
    assert_eq!(Target::for_compute_capability(9, 0), Some(Target::Sm90a));
    assert_eq!(Target::for_compute_capability(7, 5), None);
}

#[test]
fn cache_reuses_entries_and_survives_concurrent_compiles() {
    let directory = std::env::temp_dir().join(format!("anybit-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    let cache = KernelCache::new(&directory);
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| cache.compile(SCALE, "scale", Target::Sm80).unwrap()))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    });
    assert!(results
        .windows(2)
        .all(|pair| pair[0].cubin == pair[1].cubin));
    let entries: Vec<_> = std::fs::read_dir(&directory)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        entries.len(),
        2,
        "one cubin and one ptx, no leftovers: {entries:?}"
    );
    // A second request is served from disk: delete nothing, compare bytes.
    let again = cache.compile(SCALE, "scale", Target::Sm80).unwrap();
    assert_eq!(again.cubin, results[0].cubin);
    // Another target is another entry.
    cache.compile(SCALE, "scale", Target::Sm90a).unwrap();
    assert_eq!(std::fs::read_dir(&directory).unwrap().count(), 4);
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn toolkit_errors_list_every_place_searched() {
    let error = anybit_cuda::ToolkitError::NotFound {
        searched: vec!["CUDA_HOME (not set)".into(), "/usr/local/cuda".into()],
    };
    let message = error.to_string();
    assert!(
        message.contains("  - CUDA_HOME (not set)\n  - /usr/local/cuda"),
        "{message}"
    );
    assert!(message.contains("scripts/install-cuda-wheels"), "{message}");
}

#[test]
fn sass_splits_by_function() {
    let sass = "header\n\tFunction : first\n  /*0000*/ MOV R1, c[0x0][0x28] ;\n\
                \tFunction : second\n  /*0000*/ EXIT ;\n";
    let functions = anybit_cuda::sass_by_function(sass);
    assert_eq!(functions.len(), 2);
    assert_eq!(functions["first"], "  /*0000*/ MOV R1, c[0x0][0x28] ;\n");
    assert_eq!(functions["second"], "  /*0000*/ EXIT ;\n");
}
