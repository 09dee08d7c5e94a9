//! Unit tests of register layouts: primitives, composition, division, reduction, text errors and
//! an exhaustive check that canonical equality is equality of mappings.

use std::collections::HashMap;

use anybit_layout::{ModeRef, ParseLayoutError, RegisterLayout, ThreadEntry};

fn parse(text: &str) -> RegisterLayout {
    match text.parse() {
        Ok(layout) => layout,
        Err(error) => panic!("{text}: {error}"),
    }
}

fn parse_error(text: &str) -> ParseLayoutError {
    match text.parse::<RegisterLayout>() {
        Ok(layout) => panic!("{text} parsed as {layout}"),
        Err(error) => error,
    }
}

fn mapping(layout: &RegisterLayout) -> Vec<Vec<usize>> {
    (0..layout.num_threads())
        .flat_map(|t| (0..layout.local_size()).map(move |l| (t, l)))
        .map(|(t, l)| layout.coordinates(t, l))
        .collect()
}

#[test]
fn primitives_map_as_documented() {
    let local = RegisterLayout::local(&[2, 3]);
    assert_eq!((local.num_threads(), local.local_size()), (1, 6));
    assert_eq!(local.coordinates(0, 4), vec![1, 1]);
    let column_local = RegisterLayout::column_local(&[2, 3]);
    assert_eq!(column_local.coordinates(0, 4), vec![0, 2]);
    assert_eq!(column_local.coordinates(0, 1), vec![1, 0]);
    let spatial = RegisterLayout::spatial(&[2, 3]);
    assert_eq!((spatial.num_threads(), spatial.local_size()), (6, 1));
    assert_eq!(spatial.coordinates(5, 0), vec![1, 2]);
    assert_eq!(spatial.coordinates(3, 0), vec![1, 0]);
    let column_spatial = RegisterLayout::column_spatial(&[2, 3]);
    assert_eq!(column_spatial.coordinates(3, 0), vec![1, 1]);
    let replicate = RegisterLayout::replicate(2, 4);
    assert_eq!(replicate.shape(), &[1, 1]);
    assert_eq!((replicate.num_threads(), replicate.replication()), (4, 4));
    assert_eq!(
        replicate.owners(&[0, 0]),
        vec![(0, 0), (1, 0), (2, 0), (3, 0)]
    );
    // Size-1 dimensions make row- and column-major the same.
    assert_eq!(
        RegisterLayout::local(&[1, 8]),
        RegisterLayout::column_local(&[1, 8])
    );
    assert_ne!(
        RegisterLayout::local(&[2, 8]),
        RegisterLayout::column_local(&[2, 8])
    );
}

#[test]
fn compose_of_different_ranks_is_an_error() {
    let error = RegisterLayout::local(&[2])
        .compose(&RegisterLayout::spatial(&[2, 2]))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot compose layouts of different rank: local(2) has rank 1 and spatial(2,2) has rank 2"
    );
}

#[test]
fn compose_merges_into_canonical_form() {
    let merged = parse("local(2,1).local(2,4)");
    assert_eq!(merged, RegisterLayout::local(&[4, 4]));
    assert_eq!(merged.to_string(), "local(4,4)");
    assert_eq!(
        parse("spatial(2).spatial(16)"),
        RegisterLayout::spatial(&[32])
    );
    assert_eq!(
        parse("replicate(2).spatial(4).replicate(2).replicate(3)").to_string(),
        "replicate(2).spatial(4).replicate(6)"
    );
    // Not mergeable: the two local modes of dim 0 are not adjacent in the local list. Display
    // picks one of the chains that denote the layout.
    let interleaved = parse("local(2,2).local(2,1)");
    assert_eq!(interleaved.to_string(), "local(2,2).local(2,1)");
    assert_eq!(interleaved, parse("local(2,1).column_local(2,2)"));
    assert_ne!(interleaved, RegisterLayout::local(&[4, 2]));
}

#[test]
fn divide_examples() {
    let c_atom = parse("spatial(8,4).local(1,2)");
    assert_eq!(
        c_atom.divide(&parse("local(1,2)")),
        Some(RegisterLayout::spatial(&[8, 4]))
    );
    assert_eq!(
        parse("local(2,2).spatial(8,4).local(1,2)").divide(&c_atom),
        Some(RegisterLayout::local(&[2, 2]))
    );
    // A quotient that needs a mode of the dividend split: local(4,4) = local(4,2).local(1,2).
    assert_eq!(
        parse("spatial(8,4).local(4,4)").divide(&parse("local(1,2)")),
        Some(parse("spatial(8,4).local(4,2)"))
    );
    // local(2,2).local(2,2) interleaves the dims, so it is not local(4,4).
    assert_eq!(parse("local(4,4)").divide(&parse("local(2,2)")), None);
    assert_eq!(
        parse("local(2,2).local(2,2)").divide(&parse("local(2,2)")),
        Some(parse("local(2,2)"))
    );
    // The innermost thread structure does not match.
    assert_eq!(
        c_atom.divide(&parse("column_spatial(8,4).local(1,2)")),
        None
    );
    // The innermost local structure does not match (row-major vs column-major locals).
    assert_eq!(
        parse("local(2,2)").divide(&parse("column_local(2,2)")),
        None
    );
    // The shape does not divide.
    assert_eq!(parse("local(6)").divide(&parse("local(4)")), None);
    // The atom's modes would need to be local but are spatial in the dividend.
    assert_eq!(c_atom.divide(&parse("local(1,4)")), None);
    // Different ranks.
    assert_eq!(c_atom.divide(&parse("local(2)")), None);
    // Replication can be divided off too.
    assert_eq!(
        parse("spatial(4).replicate(8)").divide(&RegisterLayout::replicate(1, 2)),
        Some(parse("spatial(4).replicate(4)"))
    );
}

#[test]
fn warp_tile_divided_by_the_mma_c_atom() {
    // A 64x64 f32 warp tile: 4x8 mma.m16n8k16 C fragments per warp, each thread holding all of
    // its fragments.
    let c_atom = parse("local(2,1).spatial(8,4).local(1,2)");
    let tile = parse("local(4,8)").compose(&c_atom).unwrap();
    assert_eq!(tile.shape(), &[64, 64]);
    assert_eq!((tile.num_threads(), tile.local_size()), (32, 128));
    assert_eq!(tile.divide(&c_atom), Some(RegisterLayout::local(&[4, 8])));
    // Four warps splitting the tile 2x2, then 2x4 fragments per warp.
    let block = parse("spatial(2,2).local(2,4)").compose(&c_atom).unwrap();
    assert_eq!(block.num_threads(), 128);
    assert_eq!(
        block.divide(&c_atom),
        Some(parse("spatial(2,2).local(2,4)"))
    );
    // column_local(2,2) = local(1,2).local(2,1), so the A fragment is two C atoms side by side.
    let a = parse("column_local(2,2).spatial(8,4).local(1,2)");
    assert_eq!(a.divide(&c_atom), Some(RegisterLayout::local(&[1, 2])));
    // The B fragment's threads run column-major: it holds no spatial(8,4) part.
    let b = parse("local(2,1).column_spatial(4,8).local(2,1)");
    assert_eq!(b.divide(&parse("spatial(8,4).local(2,1)")), None);
    assert_eq!(
        b.divide(&parse("column_spatial(4,8).local(2,1)")),
        Some(parse("local(2,1)"))
    );
}

#[test]
fn reduce_turns_spatial_modes_into_replication() {
    let c = parse("local(2,1).spatial(8,4).local(1,2)");
    let rows = c.reduce(1);
    assert_eq!(rows.shape(), &[16, 1]);
    assert_eq!(rows.to_string(), "local(2,1).spatial(8,1).replicate(4)");
    assert_eq!(rows.replication(), 4);
    // The four threads of a quad hold row 3's sum in their slot 0 and row 11's in slot 1.
    assert_eq!(
        rows.owners(&[3, 0]),
        vec![(12, 0), (13, 0), (14, 0), (15, 0)]
    );
    assert_eq!(
        rows.owners(&[11, 0]),
        vec![(12, 1), (13, 1), (14, 1), (15, 1)]
    );
    let columns = c.reduce(0);
    assert_eq!(columns.to_string(), "replicate(8).spatial(1,4).local(1,2)");
    assert_eq!(columns.owners(&[0, 5]).len(), 8);
    let all = rows.reduce(0);
    assert_eq!(all.to_string(), "local(1,1).replicate(32)");
}

#[test]
fn coordinates_lookup_helpers() {
    let a = parse("column_local(2,2).spatial(8,4).local(1,2)");
    let mut out = [0; 2];
    a.coordinates_into(5, 6, &mut out);
    assert_eq!(out, [9, 10]);
    assert_eq!(a.local_index_of(5, &[9, 10]), Some(6));
    assert_eq!(a.local_index_of(5, &[9, 11]), Some(7));
    assert_eq!(a.local_index_of(4, &[9, 11]), None);
    assert_eq!(a.local_index_of(5, &[16, 0]), None);
    assert_eq!(a.local_index_of(5, &[9]), None);
    assert_eq!(a.owners(&[9, 10]), vec![(5, 6)]);
    assert_eq!(a.owners(&[9, 16]), vec![]);
    assert!(a.is_injective());
}

#[test]
fn explicit_form_for_layouts_that_are_not_chains() {
    // Thread digits interleave dims 0 and 1 in an order no chain of primitives produces.
    let modes = vec![vec![2, 2], vec![2]];
    let threads = [
        ThreadEntry::Mode(ModeRef { dim: 0, index: 1 }),
        ThreadEntry::Replicate(2),
        ThreadEntry::Mode(ModeRef { dim: 0, index: 0 }),
    ];
    let locals = [ModeRef { dim: 1, index: 0 }];
    let layout = RegisterLayout::from_parts(&modes, &threads, &locals).unwrap();
    let text = layout.to_string();
    assert_eq!(
        text,
        "layout(shape=[4,2], modes=[[2,2],[2]], threads=[d0.1,rep(2),d0.0], locals=[d1.0])"
    );
    assert_eq!(parse(&text), layout);
    assert_eq!(layout.coordinates(1, 1), vec![2, 1]);
    assert_eq!(layout.coordinates(4, 0), vec![1, 0]);
    // The explicit form also accepts non-canonical input and chains with other items.
    let spaced = parse(" layout ( shape = [ 4 ] , modes = [ [ 2 , 2 ] ] , threads = [ ] , locals = [ d0.0 , d0.1 ] ) ");
    assert_eq!(spaced, RegisterLayout::local(&[4]));
    assert_eq!(
        parse("layout(shape=[2], modes=[[2]], threads=[d0.0], locals=[]).local(2)"),
        parse("spatial(2).local(2)")
    );
    assert_eq!(
        parse("layout(shape=[], modes=[], threads=[rep(3)], locals=[])").to_string(),
        "local().replicate(3)"
    );
}

#[test]
fn from_parts_rejects_bad_parts() {
    let modes = vec![vec![2, 2]];
    let m = |index| ModeRef { dim: 0, index };
    let error = |threads: &[ThreadEntry], locals: &[ModeRef]| {
        RegisterLayout::from_parts(&modes, threads, locals)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        error(&[ThreadEntry::Mode(m(0))], &[]),
        "mode d0.1 is in neither the thread nor the local list"
    );
    assert_eq!(
        error(&[ThreadEntry::Mode(m(0))], &[m(0), m(1)]),
        "mode d0.0 is used more than once"
    );
    assert_eq!(error(&[ThreadEntry::Mode(m(0))], &[m(2)]), "no mode d0.2");
    assert_eq!(
        error(&[ThreadEntry::Replicate(0)], &[]),
        "rep(0): the count must be at least 1"
    );
}

#[test]
fn parse_errors_carry_position_and_expectation() {
    let cases: &[(&str, usize, &str)] = &[
        ("", 0, "expected a layout (local, spatial, column_local, column_spatial, replicate or layout), found end of input"),
        ("spatial(8,4).lokal(1,2)", 13, "expected a layout (local, spatial, column_local, column_spatial, replicate or layout), found 'lokal'"),
        ("spatial(8,4", 11, "expected ',' or ')' in 'spatial(', found end of input"),
        ("spatial(8,0)", 10, "sizes must be at least 1"),
        ("spatial 8,4)", 8, "expected '(' after 'spatial', found number 8"),
        ("local(2).spatial(2,2)", 9, "this item has rank 2 but earlier items have rank 1"),
        ("replicate(4)", 0, "a chain of only replicate(..) has no rank; add an item with a shape, as in local(1,1).replicate(4)"),
        ("replicate(4).replicate(2)", 0, "a chain of only replicate(..) has no rank; add an item with a shape, as in local(1,1).replicate(4)"),
        ("local(2) local(2)", 9, "expected end of input, found 'local'"),
        ("local(2)#", 8, "unexpected character '#'"),
        ("local(é)", 6, "unexpected character 'é'"),
        ("local(99999999999999999999999)", 6, "number too large"),
        ("spatial(4294967296,4294967296)", 0, "number of elements of spatial[4294967296, 4294967296] overflows usize"),
        ("local(65536,65536).local(65536,65536)", 19, "cannot compose local(65536,65536) with local(65536,65536): local size overflows usize"),
        ("layout(shape=[2], modes=[[2]], threads=[d0.0], locals=[d0.0])", 0, "mode d0.0 is used more than once"),
        ("layout(shape=[3], modes=[[2]], threads=[d0.0], locals=[])", 0, "the shape [3] is not the product of the modes ([2])"),
        ("layout(shape=[2], modes=[[2]], threads=[x0.0], locals=[])", 40, "expected a mode like d0.1 (dimension 0, mode 1), found 'x0'"),
        ("layout(shape=[2], modes=[[2]], thread=[d0.0], locals=[])", 31, "expected 'threads=', found 'thread'"),
    ];
    for &(text, position, message) in cases {
        let error = parse_error(text);
        assert_eq!(
            (error.position, error.message.as_str()),
            (position, message),
            "{text}"
        );
    }
    assert_eq!(
        parse_error("local(2").to_string(),
        "at byte 7: expected ',' or ')' in 'local(', found end of input"
    );
}

/// Every small layout in explicit form (modes of size 2 and 4, at most three of them, placed in
/// every order, with or without a replication factor): two are `==` exactly when they have the
/// same mapping, and printing then parsing gives the layout back.
#[test]
fn canonical_equality_is_mapping_equality_exhaustively() {
    type Signature = (Vec<usize>, usize, usize, Vec<Vec<usize>>);
    let mut by_signature: HashMap<Signature, RegisterLayout> = HashMap::new();
    let mut by_layout: HashMap<RegisterLayout, Signature> = HashMap::new();
    let mut count = 0;
    for modes in small_mode_sets() {
        let refs: Vec<ModeRef> = modes
            .iter()
            .enumerate()
            .flat_map(|(dim, sizes)| (0..sizes.len()).map(move |index| ModeRef { dim, index }))
            .collect();
        // Each mode goes to threads or locals; then every order of each list.
        for assignment in 0..(1usize << refs.len()) {
            let (thread_modes, local_modes): (Vec<_>, Vec<_>) = refs
                .iter()
                .enumerate()
                .partition(|(i, _)| assignment >> i & 1 == 1);
            let thread_modes: Vec<ModeRef> = thread_modes.into_iter().map(|(_, m)| *m).collect();
            let local_modes: Vec<ModeRef> = local_modes.into_iter().map(|(_, m)| *m).collect();
            for thread_order in permutations(&thread_modes) {
                let mut thread_lists = vec![thread_order
                    .iter()
                    .map(|&m| ThreadEntry::Mode(m))
                    .collect::<Vec<_>>()];
                for at in 0..=thread_order.len() {
                    let mut with_replicate = thread_lists[0].clone();
                    with_replicate.insert(at, ThreadEntry::Replicate(2));
                    thread_lists.push(with_replicate);
                }
                for local_order in permutations(&local_modes) {
                    for threads in &thread_lists {
                        let layout =
                            RegisterLayout::from_parts(&modes, threads, &local_order).unwrap();
                        let signature = (
                            layout.shape().to_vec(),
                            layout.num_threads(),
                            layout.local_size(),
                            mapping(&layout),
                        );
                        if let Some(previous) = by_signature.get(&signature) {
                            assert_eq!(
                                previous, &layout,
                                "same mapping, different canonical forms"
                            );
                        }
                        if let Some(previous) = by_layout.get(&layout) {
                            assert_eq!(
                                previous, &signature,
                                "equal layouts with different mappings: {layout}"
                            );
                        }
                        assert_eq!(parse(&layout.to_string()), layout);
                        by_signature.insert(signature.clone(), layout.clone());
                        by_layout.insert(layout, signature);
                        count += 1;
                    }
                }
            }
        }
    }
    assert!(count > 3000, "{count}");
    // Constructions that differ only in mergeable splits collapse onto one layout.
    assert_eq!(by_layout.len(), by_signature.len());
    assert_eq!(by_layout.len(), 3106);
}

fn small_mode_sets() -> Vec<Vec<Vec<usize>>> {
    let mut sequences: Vec<Vec<usize>> = vec![vec![]];
    for length in 1..=3 {
        for code in 0..(1usize << length) {
            sequences.push(
                (0..length)
                    .map(|i| if code >> i & 1 == 1 { 4 } else { 2 })
                    .collect(),
            );
        }
    }
    let mut sets = Vec::new();
    for a in &sequences {
        sets.push(vec![a.clone()]);
        for b in &sequences {
            if a.len() + b.len() <= 3 {
                sets.push(vec![a.clone(), b.clone()]);
            }
        }
    }
    sets
}

fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    if items.is_empty() {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first.clone());
            out.push(tail);
        }
    }
    out
}

#[test]
fn leading_dims_of_size_one_keep_the_mapping() {
    let layout: RegisterLayout = "local(2,1).spatial(8,4).local(1,2)".parse().unwrap();
    let lifted = layout.with_leading_dims(2);
    assert_eq!(lifted.shape(), &[1, 1, 16, 8]);
    assert_eq!(lifted.num_threads(), 32);
    assert_eq!(lifted.local_size(), 4);
    for thread in 0..32 {
        for local in 0..4 {
            let mut expected = vec![0, 0];
            expected.extend(layout.coordinates(thread, local));
            assert_eq!(lifted.coordinates(thread, local), expected);
        }
    }
    let text: RegisterLayout = "local(1,2,1).spatial(1,8,4).local(1,1,2)".parse().unwrap();
    assert_eq!(layout.with_leading_dims(1), text);
}
