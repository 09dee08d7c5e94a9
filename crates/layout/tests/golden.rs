//! Golden (snapshot) tests of printed layouts. Snapshots live in tests/snapshots; after a
//! deliberate change, re-run with INSTA_UPDATE=always and review the diff of the .snap files.

use std::fmt::Write;

use anybit_layout::{ModeRef, RegisterLayout, SharedLayout, ThreadEntry};

fn describe(layout: &RegisterLayout) -> String {
    format!(
        "{layout}  shape={:?} threads={} local={} replication={}",
        layout.shape(),
        layout.num_threads(),
        layout.local_size(),
        layout.replication()
    )
}

fn parse(text: &str) -> RegisterLayout {
    match text.parse() {
        Ok(layout) => layout,
        Err(error) => panic!("{text}: {error}"),
    }
}

#[test]
fn printed_register_layouts() {
    let inputs = [
        "local(2,3)",
        "spatial(8,4)",
        "column_local(2,2)",
        "column_spatial(4,8)",
        "local(1,1).replicate(4)",
        "column_local(2,2).spatial(8,4).local(1,2)",
        "local(2,1).column_spatial(4,8).local(2,1)",
        "local(2,1).spatial(8,4).local(1,2)",
        "local(4,8).local(2,1).spatial(8,4).local(1,2)",
        "spatial(2,2).local(2,4).local(2,1).spatial(8,4).local(1,2)",
        "local(4,4).column_spatial(16,2).local(1,8)",
        "spatial(2).spatial(16)",
        "local(2,2).local(2,2)",
        "spatial(4,1).replicate(2).spatial(1,4)",
        "  local ( 2 , 1 ) . spatial( 8,4 ) .local(1, 2)  ",
        "layout(shape=[4,2], modes=[[2,2],[2]], threads=[d0.1,rep(2),d0.0], locals=[d1.0])",
        "layout(shape=[8], modes=[[2,2,2]], threads=[d0.2,d0.0], locals=[d0.1])",
    ];
    let mut out = String::new();
    for input in inputs {
        writeln!(out, "{input}\n  => {}", describe(&parse(input))).unwrap();
    }
    insta::assert_snapshot!(out);
}

#[test]
fn printed_divisions_and_reductions() {
    let c = parse("local(2,1).spatial(8,4).local(1,2)");
    let cases = [
        ("local(4,8).local(2,1).spatial(8,4).local(1,2)", c.clone()),
        ("column_local(2,2).spatial(8,4).local(1,2)", c.clone()),
        ("spatial(8,4).local(1,2)", parse("local(1,2)")),
        (
            "local(2,2).spatial(8,4).local(1,2)",
            parse("spatial(8,4).local(1,2)"),
        ),
        ("spatial(8,4).local(4,4)", parse("local(1,2)")),
        ("local(4,4)", parse("local(2,2)")),
        (
            "spatial(8,4).local(1,2)",
            parse("column_spatial(8,4).local(1,2)"),
        ),
    ];
    let mut out = String::new();
    for (dividend, atom) in cases {
        let quotient = parse(dividend).divide(&atom);
        let shown = quotient.map_or("none".to_string(), |q| q.to_string());
        writeln!(out, "{dividend} / {atom} = {shown}").unwrap();
    }
    for input in [
        "local(2,1).spatial(8,4).local(1,2)",
        "column_local(2,2).spatial(8,4).local(1,2)",
        "spatial(2,2).local(2,4).local(2,1).spatial(8,4).local(1,2)",
    ] {
        let layout = parse(input);
        for dim in 0..layout.rank() {
            writeln!(
                out,
                "reduce({input}, {dim}) = {}",
                describe(&layout.reduce(dim))
            )
            .unwrap();
        }
    }
    insta::assert_snapshot!(out);
}

#[test]
fn printed_explicit_forms() {
    let m = |dim, index| ModeRef { dim, index };
    let layouts = [
        RegisterLayout::from_parts(
            &[vec![2, 4], vec![8]],
            &[ThreadEntry::Mode(m(1, 0)), ThreadEntry::Mode(m(0, 0))],
            &[m(0, 1)],
        )
        .unwrap(),
        RegisterLayout::from_parts(
            &[vec![4], vec![2, 2]],
            &[
                ThreadEntry::Mode(m(1, 1)),
                ThreadEntry::Replicate(2),
                ThreadEntry::Mode(m(1, 0)),
            ],
            &[m(0, 0)],
        )
        .unwrap(),
    ];
    let mut out = String::new();
    for layout in &layouts {
        writeln!(out, "{}", describe(layout)).unwrap();
        for thread in 0..layout.num_threads() {
            let held: Vec<String> = (0..layout.local_size())
                .map(|local| format!("{:?}", layout.coordinates(thread, local)))
                .collect();
            writeln!(out, "  thread {thread}: {}", held.join(" ")).unwrap();
        }
    }
    insta::assert_snapshot!(out);
}

#[test]
fn printed_parse_errors() {
    let inputs = [
        "spatial(8,4).lokal(1,2)",
        "spatial(8,4",
        "replicate(4)",
        "local(2).spatial(2,2)",
        "local(2)#",
        "layout(shape=[2], modes=[[2]], threads=[], locals=[])",
    ];
    let mut out = String::new();
    for input in inputs {
        let error = input.parse::<RegisterLayout>().unwrap_err();
        writeln!(out, "{input}\n  {error}").unwrap();
    }
    for input in [
        "row_major(4).swizzle(bits=3,base=3,shift=4)",
        "strided([4 1])",
    ] {
        let error = input.parse::<SharedLayout>().unwrap_err();
        writeln!(out, "{input}\n  {error}").unwrap();
    }
    insta::assert_snapshot!(out);
}

#[test]
fn printed_shared_layouts() {
    let layouts = [
        SharedLayout::row_major(&[64, 64]),
        SharedLayout::column_major(&[16, 8]),
        SharedLayout::strided(&[vec![(64, 8)], vec![(8, 512), (8, 1)]]).unwrap(),
        SharedLayout::strided(&[vec![(64, 72)], vec![(64, 1)]]).unwrap(),
        "row_major(64,64).swizzle(bits=3,base=3,shift=6)"
            .parse()
            .unwrap(),
    ];
    let mut out = String::new();
    for layout in &layouts {
        writeln!(
            out,
            "{layout}  shape={:?} span={}",
            layout.shape(),
            layout.span()
        )
        .unwrap();
    }
    insta::assert_snapshot!(out);
}
