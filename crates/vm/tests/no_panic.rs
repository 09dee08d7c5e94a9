//! Random and mutated program texts never make the parser or the verifier panic, and whatever
//! they accept round-trips through the printer. Random expression trees round-trip too.

use anybit_dtype::DType;
use anybit_vm::{examples, parse, print, verify, Axis, CmpOp, Cond, Expr, ExprOp};
use proptest::prelude::*;
use proptest::sample::Index;

fn corpus() -> Vec<String> {
    let mut texts: Vec<String> = examples::all()
        .expect("examples")
        .iter()
        .map(|(_, program)| print(program))
        .collect();
    texts.push(print(
        &examples::quantized_matmul(DType::Signed(3), 32).expect("example"),
    ));
    // The golden kitchen-sink program, without the snapshot's header.
    let snapshot = include_str!("snapshots/text__kitchen_sink.snap");
    let body = snapshot.splitn(3, "---\n").nth(2).unwrap_or(snapshot);
    assert!(parse(body).is_ok(), "kitchen sink snapshot parses");
    texts.push(body.to_string());
    texts
}

/// Pieces of text that are likely to make interesting programs when spliced in.
const TOKENS: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ";",
    ":",
    "=",
    "%x",
    "%acc",
    "%a",
    "-",
    "0",
    "1",
    "16",
    "99999999999",
    "-2147483648",
    "1.5",
    "1e400",
    "-inf",
    "nan",
    "block.x",
    "block.w",
    "n",
    "k0",
    "let",
    "for",
    "in",
    "if",
    "else",
    "true",
    "..",
    "step 0",
    "unroll",
    "unroll 0",
    "spatial(8,4)",
    "local(1,2)",
    "replicate(4)",
    "column_local(2,2)",
    "local(0)",
    "local(99999999999,99999999999)",
    "row_major(8,8)",
    "strided([8:1])",
    "f16",
    "u4",
    "i32",
    "f6e3m2",
    "ptr<u4>",
    "add(",
    "dot(",
    "view(",
    "cast_planes(",
    "reduce_max(",
    "free_shared(%as0);",
    "barrier();",
    "wait_group(1);",
    "\n",
    " ",
    "//",
    "///",
    "é",
    "\u{0}",
    "&&",
    "||",
    "!",
    "<=",
    "%",
    "*",
    "/",
    "ceil_div(",
    "min(",
    "multiple_of 0",
    "threads(0)",
    "grid()",
];

#[derive(Clone, Debug)]
enum Edit {
    Delete(Index, usize),
    Insert(Index, &'static str),
    Replace(Index, usize, &'static str),
    Duplicate(Index, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let token = proptest::sample::select(TOKENS);
    prop_oneof![
        (any::<Index>(), 1..40usize).prop_map(|(at, len)| Edit::Delete(at, len)),
        (any::<Index>(), token.clone()).prop_map(|(at, t)| Edit::Insert(at, t)),
        (any::<Index>(), 1..20usize, token).prop_map(|(at, len, t)| Edit::Replace(at, len, t)),
        (any::<Index>(), 1..200usize).prop_map(|(at, len)| Edit::Duplicate(at, len)),
    ]
}

fn apply(text: &str, edit: &Edit) -> String {
    let chars: Vec<char> = text.chars().collect();
    let at = |index: &Index| index.index(chars.len() + 1);
    let splice = |start: usize, len: usize, insert: &str| -> String {
        let end = (start + len).min(chars.len());
        let mut out: String = chars[..start].iter().collect();
        out.push_str(insert);
        out.extend(&chars[end..]);
        out
    };
    match edit {
        Edit::Delete(index, len) => splice(at(index), *len, ""),
        Edit::Insert(index, token) => splice(at(index), 0, token),
        Edit::Replace(index, len, token) => splice(at(index), *len, token),
        Edit::Duplicate(index, len) => {
            let start = at(index);
            let end = (start + len).min(chars.len());
            let copy: String = chars[start..end].iter().collect();
            splice(end, 0, &copy)
        }
    }
}

/// Parses and verifies `text`; anything accepted must print and parse back to itself.
fn check(text: &str) {
    let Ok(program) = parse(text) else {
        return;
    };
    if verify(&program).is_ok() {
        let printed = print(&program);
        match parse(&printed) {
            Ok(again) => {
                assert_eq!(again, program, "round trip changed the program:\n{printed}");
                assert_eq!(print(&again), printed);
            }
            Err(error) => panic!("printed text does not parse: {error}\n{printed}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn truncated_texts(which in any::<Index>(), cut in any::<Index>()) {
        let corpus = corpus();
        let text = which.get(&corpus);
        let chars: Vec<char> = text.chars().collect();
        let truncated: String = chars[..cut.index(chars.len() + 1)].iter().collect();
        check(&truncated);
    }

    #[test]
    fn mutated_texts(which in any::<Index>(), edits in prop::collection::vec(edit(), 1..6)) {
        let corpus = corpus();
        let mut text = which.get(&corpus).clone();
        for edit in &edits {
            text = apply(&text, edit);
        }
        check(&text);
    }

    #[test]
    fn random_token_soup(tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..80)) {
        check(&tokens.concat());
        check(&format!("program p(n: i32) grid(1) threads(32) {{ {} }}", tokens.join(" ")));
    }

    #[test]
    fn random_text(text in "\\PC{0,300}") {
        check(&text);
    }

    #[test]
    fn random_expressions_round_trip(expr in expr(), cond in cond()) {
        let text = format!(
            "program p(a: i32, b: i32)\ngrid(1)\nthreads(1)\n{{\n    let x = {expr};\n    if {cond} {{\n    }}\n}}\n"
        );
        let program = parse(&text).map_err(|error| TestCaseError::fail(format!("{error}\n{text}")))?;
        prop_assert_eq!(print(&program), text);
        let anybit_vm::StmtKind::Let { value, .. } = &program.body[0].kind else {
            return Err(TestCaseError::fail("not a let"));
        };
        prop_assert_eq!(value, &expr);
        let anybit_vm::StmtKind::If { cond: parsed, .. } = &program.body[1].kind else {
            return Err(TestCaseError::fail("not an if"));
        };
        prop_assert_eq!(parsed, &cond);
    }
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        any::<i32>().prop_map(Expr::Const),
        prop::sample::select(vec!["a", "b"]).prop_map(|name| Expr::Var(name.to_string())),
        prop::sample::select(vec![Axis::X, Axis::Y, Axis::Z]).prop_map(Expr::BlockIdx),
    ];
    leaf.prop_recursive(5, 40, 2, |inner| {
        (
            prop::sample::select(vec![
                ExprOp::Add,
                ExprOp::Sub,
                ExprOp::Mul,
                ExprOp::Div,
                ExprOp::Rem,
                ExprOp::Min,
                ExprOp::Max,
                ExprOp::CeilDiv,
            ]),
            inner.clone(),
            inner,
        )
            .prop_map(|(op, lhs, rhs)| Expr::Binary(op, Box::new(lhs), Box::new(rhs)))
    })
}

fn cond() -> impl Strategy<Value = Cond> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Cond::Bool),
        (prop::sample::select(CmpOp::ALL.to_vec()), expr(), expr())
            .prop_map(|(op, lhs, rhs)| Cond::Compare(op, lhs, rhs)),
    ];
    leaf.prop_recursive(4, 16, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(l, r)| Cond::And(Box::new(l), Box::new(r))),
            (inner.clone(), inner.clone()).prop_map(|(l, r)| Cond::Or(Box::new(l), Box::new(r))),
            inner.prop_map(|c| Cond::Not(Box::new(c))),
        ]
    })
}
