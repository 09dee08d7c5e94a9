//! Type names parse and print exactly; bad names are errors that list the valid forms.

use anybit_dtype::{DType, MiniFloat};

#[test]
fn every_type_round_trips_through_its_name() {
    for dtype in DType::all() {
        let name = dtype.to_string();
        assert_eq!(name.parse::<DType>(), Ok(dtype), "{name}");
    }
}

#[test]
fn names_are_spelled_as_documented() {
    let names: Vec<String> = DType::all().iter().map(ToString::to_string).collect();
    for expected in [
        "u1", "u8", "i1", "i8", "u16", "u32", "i16", "i32", "f16", "bf16", "f32", "f3e1m1",
        "f4e2m1", "f4e1m2", "f5e2m2", "f5e3m1", "f6e3m2", "f6e2m3", "f7e4m2", "f8e4m3", "f8e5m2",
        "f8e7m0", "f2e1m0",
    ] {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} missing"
        );
    }
    // 8 unsigned + 8 signed + small floats (sum over bits 2..=8 of bits-1 splits = 28) + 7 wide.
    assert_eq!(names.len(), 8 + 8 + 28 + 7);
    assert_eq!(
        "f6e3m2".parse::<DType>(),
        Ok(DType::MiniFloat(MiniFloat::new(3, 2).unwrap()))
    );
    assert_eq!("u4".parse::<DType>(), Ok(DType::Unsigned(4)));
    assert_eq!("i32".parse::<DType>(), Ok(DType::Signed(32)));
}

#[test]
fn bad_names_say_what_is_wrong_and_what_is_valid() {
    let cases = [
        ("u9", "integer widths are 1 to 8, 16 and 32 bits"),
        ("i0", "integer widths are 1 to 8, 16 and 32 bits"),
        ("u", "expected a bit width"),
        ("f6e3m3", "bits must equal 1 + E + M = 7"),
        ("f5e0m4", "at least one exponent bit"),
        ("f10e5m4", "at most 8 bits"),
        ("f8", "written f{bits}e{E}m{M}"),
        ("f4e2", "`m{M}` part"),
        ("f4exm1", "decimal numbers"),
        ("x4", "starts with u, i, f or bf"),
        ("", "starts with u, i, f or bf"),
        ("U4", "starts with u, i, f or bf"),
        ("u+4", "expected a bit width"),
    ];
    for (name, reason) in cases {
        let error = name.parse::<DType>().unwrap_err();
        let message = error.to_string();
        assert!(message.contains(reason), "{name}: {message}");
        assert!(message.contains(&format!("`{name}`")), "{message}");
        assert!(message.contains("u1..u8, u16, u32, i1..i8"), "{message}");
    }
}

#[test]
fn widths_and_classes() {
    assert_eq!(DType::Unsigned(3).bits(), 3);
    assert_eq!("f6e2m3".parse::<DType>().unwrap().bits(), 6);
    assert_eq!(DType::Bf16.bits(), 16);
    assert!(DType::F16.is_float() && !DType::F16.is_integer());
    assert!(DType::Signed(4).is_signed() && !DType::Unsigned(4).is_signed());
    assert_eq!(DType::all_small().len(), 44);
    assert!(DType::all_small().iter().all(|dtype| dtype.bits() <= 8));
}
