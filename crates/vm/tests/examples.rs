//! The example programs: their text files under `examples/` are exactly what the printer gives
//! for the builder's programs, they parse back to the same programs, and they verify.
//! Set `ANYBIT_BLESS=1` to rewrite the text files.

use std::path::PathBuf;

use anybit_vm::{examples, parse, print};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn example_files_match_the_builder() {
    let bless = std::env::var_os("ANYBIT_BLESS").is_some();
    for (file, program) in examples::all().expect("examples build") {
        let path = examples_dir().join(file);
        let text = print(&program);
        if bless {
            std::fs::write(&path, &text).expect("write example");
        }
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert_eq!(on_disk, text, "{file} differs from the builder's program");
        let parsed = parse(&on_disk).unwrap_or_else(|error| panic!("{file}:{error}"));
        assert_eq!(parsed, program, "{file} parses to another program");
        assert_eq!(
            print(&parsed),
            on_disk,
            "{file} does not print back the same"
        );
    }
}
