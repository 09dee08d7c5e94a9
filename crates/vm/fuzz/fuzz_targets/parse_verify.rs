//! Feeds arbitrary bytes (as UTF-8 text) to the parser and, when it accepts them, to the
//! verifier. Neither may panic; a program the verifier accepts must print to text that parses
//! back to the same program, and that text must print back unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(program) = anybit_vm::parse(text) else {
        return;
    };
    if anybit_vm::verify(&program).is_err() {
        return;
    }
    let printed = anybit_vm::print(&program);
    let again = anybit_vm::parse(&printed).expect("printed text parses");
    assert_eq!(again, program, "round trip changed the program");
    assert_eq!(anybit_vm::print(&again), printed, "printing is not canonical");
});
