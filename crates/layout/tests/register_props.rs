//! Property tests of the register-layout algebra over random layouts.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use anybit_layout::{ModeRef, Primitive, RegisterLayout, ThreadEntry};
use proptest::prelude::*;

/// Keeps exhaustive checks cheap.
const MAX_SLOTS: usize = 1 << 13;

fn slots(layout: &RegisterLayout) -> usize {
    layout.num_threads() * layout.local_size()
}

/// One random chain item of rank `rank`.
fn item(rank: usize, sizes: Vec<usize>) -> impl Strategy<Value = RegisterLayout> {
    let size = prop::sample::select(sizes);
    prop_oneof![
        4 => (prop::sample::select(Primitive::ALL.to_vec()), prop::collection::vec(size, rank))
            .prop_map(|(kind, shape)| RegisterLayout::primitive(kind, &shape).expect("valid primitive")),
        1 => (1usize..=3).prop_map(move |count| RegisterLayout::replicate(rank, count)),
    ]
}

/// A random composition of 1 to `max_items` primitives of rank `rank`.
fn chain_of_rank(
    rank: usize,
    max_items: usize,
    sizes: Vec<usize>,
) -> impl Strategy<Value = RegisterLayout> {
    prop::collection::vec(item(rank, sizes), 1..=max_items)
        .prop_map(|items| {
            let mut layout = items[0].clone();
            for next in &items[1..] {
                layout = layout.compose(next).expect("same rank");
            }
            layout
        })
        .prop_filter("small enough to enumerate", |l| slots(l) <= MAX_SLOTS)
}

fn default_sizes() -> Vec<usize> {
    vec![1, 1, 2, 2, 2, 3, 4]
}

fn chain() -> impl Strategy<Value = RegisterLayout> {
    (0usize..=3).prop_flat_map(|rank| chain_of_rank(rank, 4, default_sizes()))
}

/// Several layouts of one random rank.
fn chains_of_same_rank(count: usize) -> impl Strategy<Value = Vec<RegisterLayout>> {
    (1usize..=3).prop_flat_map(move |rank| {
        prop::collection::vec(chain_of_rank(rank, 3, default_sizes()), count)
    })
}

/// A random layout of rank `rank` in explicit form: random modes, each put at a random place in
/// the thread or local list, with replication factors sprinkled in. Most are not chains.
fn explicit_of_rank(rank: usize) -> impl Strategy<Value = RegisterLayout> {
    let modes = prop::collection::vec(
        prop::collection::vec(prop::sample::select(vec![2usize, 2, 3, 4]), 0..=3),
        rank,
    );
    (modes, any::<u64>())
        .prop_map(|(modes, seed)| {
            let mut rng = seed;
            let mut next = move |n: usize| {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((rng >> 33) as usize) % n.max(1)
            };
            let mut threads: Vec<ThreadEntry> = Vec::new();
            let mut locals: Vec<ModeRef> = Vec::new();
            for (dim, sizes) in modes.iter().enumerate() {
                for index in 0..sizes.len() {
                    let mode = ModeRef { dim, index };
                    if next(2) == 0 {
                        let at = next(threads.len() + 1);
                        threads.insert(at, ThreadEntry::Mode(mode));
                    } else {
                        let at = next(locals.len() + 1);
                        locals.insert(at, mode);
                    }
                }
            }
            for _ in 0..next(3) {
                let at = next(threads.len() + 1);
                threads.insert(at, ThreadEntry::Replicate(2 + next(2)));
            }
            RegisterLayout::from_parts(&modes, &threads, &locals).expect("valid parts")
        })
        .prop_filter("small enough to enumerate", |l| slots(l) <= MAX_SLOTS)
}

fn explicit() -> impl Strategy<Value = RegisterLayout> {
    (0usize..=3).prop_flat_map(explicit_of_rank)
}

fn any_layout() -> impl Strategy<Value = RegisterLayout> {
    prop_oneof![chain(), explicit()]
}

/// The full mapping (thread, local) -> coordinates.
fn mapping(layout: &RegisterLayout) -> Vec<Vec<usize>> {
    let mut out = Vec::with_capacity(slots(layout));
    for thread in 0..layout.num_threads() {
        for local in 0..layout.local_size() {
            out.push(layout.coordinates(thread, local));
        }
    }
    out
}

fn hash_of(layout: &RegisterLayout) -> u64 {
    let mut hasher = DefaultHasher::new();
    layout.hash(&mut hasher);
    hasher.finish()
}

/// Checks that `layout` covers its shape with every element held `replication` times by
/// distinct threads, and that the lookup helpers agree with `coordinates`.
fn check_covering(layout: &RegisterLayout) -> Result<(), TestCaseError> {
    let mut holders: HashMap<Vec<usize>, Vec<(usize, usize)>> = HashMap::new();
    let mut buffer = vec![0; layout.rank()];
    for thread in 0..layout.num_threads() {
        for local in 0..layout.local_size() {
            let coords = layout.coordinates(thread, local);
            layout.coordinates_into(thread, local, &mut buffer);
            prop_assert_eq!(&buffer, &coords);
            prop_assert!(
                coords.iter().zip(layout.shape()).all(|(c, s)| c < s),
                "{:?} out of {:?}",
                coords,
                layout.shape()
            );
            prop_assert_eq!(layout.local_index_of(thread, &coords), Some(local));
            holders.entry(coords).or_default().push((thread, local));
        }
    }
    prop_assert_eq!(holders.len(), layout.num_elements());
    for (coords, owners) in &holders {
        prop_assert_eq!(owners.len(), layout.replication());
        prop_assert_eq!(&layout.owners(coords), owners);
        // Replicas live in different threads.
        let mut threads: Vec<usize> = owners.iter().map(|o| o.0).collect();
        threads.dedup();
        prop_assert_eq!(threads.len(), owners.len());
    }
    // A thread that does not hold an element finds no slot for it.
    if let Some((coords, owners)) = holders.iter().next() {
        for thread in 0..layout.num_threads() {
            let holds = owners.iter().any(|o| o.0 == thread);
            prop_assert_eq!(layout.local_index_of(thread, coords).is_some(), holds);
        }
    }
    prop_assert_eq!(
        layout.local_index_of(layout.num_threads(), &vec![0; layout.rank()]),
        None
    );
    prop_assert!(layout
        .owners(&vec![usize::MAX; layout.rank().max(1)])
        .is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn compose_is_associative(layouts in chains_of_same_rank(3)) {
        let [a, b, c] = [&layouts[0], &layouts[1], &layouts[2]];
        let left = a.compose(b).unwrap().compose(c).unwrap();
        let right = a.compose(&b.compose(c).unwrap()).unwrap();
        prop_assert_eq!(left, right);
    }

    #[test]
    fn compose_follows_its_definition(layouts in chains_of_same_rank(2)) {
        let (outer, inner) = (&layouts[0], &layouts[1]);
        let product = outer.compose(inner).unwrap();
        prop_assume!(slots(&product) <= MAX_SLOTS);
        prop_assert_eq!(product.num_threads(), outer.num_threads() * inner.num_threads());
        prop_assert_eq!(product.local_size(), outer.local_size() * inner.local_size());
        for thread in 0..product.num_threads() {
            for local in 0..product.local_size() {
                let o = outer.coordinates(thread / inner.num_threads(), local / inner.local_size());
                let i = inner.coordinates(thread % inner.num_threads(), local % inner.local_size());
                let expected: Vec<usize> = (0..product.rank())
                    .map(|d| o[d] * inner.shape()[d] + i[d])
                    .collect();
                prop_assert_eq!(product.coordinates(thread, local), expected);
            }
        }
    }

    #[test]
    fn divide_inverts_compose(layouts in chains_of_same_rank(2)) {
        let (quotient, atom) = (&layouts[0], &layouts[1]);
        let product = quotient.compose(atom).unwrap();
        let found = product.divide(atom);
        prop_assert_eq!(found.as_ref(), Some(quotient), "{} / {}", product, atom);
        prop_assert_eq!(&found.unwrap().compose(atom).unwrap(), &product);
    }

    #[test]
    fn divide_is_exact_whenever_it_succeeds(layouts in chains_of_same_rank(2)) {
        let (dividend, atom) = (&layouts[0], &layouts[1]);
        if let Some(quotient) = dividend.divide(atom) {
            prop_assert_eq!(&quotient.compose(atom).unwrap(), dividend);
        }
    }

    #[test]
    fn divide_by_a_factor_of_an_explicit_layout(
        pair in (0usize..=3).prop_flat_map(|rank| (explicit_of_rank(rank), explicit_of_rank(rank)))
    ) {
        let (layout, atom) = pair;
        let product = layout.compose(&atom).unwrap();
        let quotient = product.divide(&atom);
        prop_assert_eq!(quotient.as_ref(), Some(&layout));
    }

    #[test]
    fn every_layout_covers_its_shape(layout in any_layout()) {
        check_covering(&layout)?;
    }

    #[test]
    fn print_parse_round_trip(layout in any_layout()) {
        let text = layout.to_string();
        let parsed: RegisterLayout = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(&parsed, &layout, "{}", text);
    }

    #[test]
    fn chains_print_as_chains(layout in chain()) {
        let text = layout.to_string();
        prop_assert!(!text.starts_with("layout("), "{}", text);
    }

    #[test]
    fn equality_is_equality_of_mappings(
        layouts in (1usize..=2).prop_flat_map(|rank| prop::collection::vec(chain_of_rank(rank, 3, vec![1, 2, 2]), 2))
    ) {
        let (a, b) = (&layouts[0], &layouts[1]);
        let same_mapping = a.shape() == b.shape()
            && a.num_threads() == b.num_threads()
            && a.local_size() == b.local_size()
            && mapping(a) == mapping(b);
        prop_assert_eq!(a == b, same_mapping, "{} vs {}", a, b);
        if a == b {
            prop_assert_eq!(hash_of(a), hash_of(b));
        }
    }

    #[test]
    fn reduce_keeps_every_holder(
        layout in prop_oneof![
            (1usize..=3).prop_flat_map(|rank| chain_of_rank(rank, 4, default_sizes())),
            (1usize..=3).prop_flat_map(explicit_of_rank),
        ],
        dim_seed in any::<usize>(),
    ) {
        let dim = dim_seed % layout.rank();
        let reduced = layout.reduce(dim);
        prop_assert_eq!(reduced.shape()[dim], 1);
        prop_assert_eq!(reduced.num_threads(), layout.num_threads());
        for (d, (&r, &s)) in reduced.shape().iter().zip(layout.shape()).enumerate() {
            if d != dim {
                prop_assert_eq!(r, s);
            }
        }
        // Every thread that held an element of a row holds that row's result.
        for thread in 0..layout.num_threads() {
            for local in 0..layout.local_size() {
                let mut coords = layout.coordinates(thread, local);
                coords[dim] = 0;
                prop_assert!(reduced.local_index_of(thread, &coords).is_some());
            }
        }
        check_covering(&reduced)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn parsing_arbitrary_text_never_panics(text in "\\PC{0,40}") {
        let _ = text.parse::<RegisterLayout>();
    }

    #[test]
    fn parsing_damaged_layouts_never_panics(
        layout in any_layout(),
        cut in any::<usize>(),
        insert in prop::sample::select(vec!["", "(", ")", ",", ".", "[", "]", "=", "0", "99999999999999999999999", "x", "é", " "]),
    ) {
        let text = layout.to_string();
        let at = cut % (text.len() + 1);
        let damaged = format!("{}{}{}", &text[..at], insert, &text[at..]);
        let _ = damaged.parse::<RegisterLayout>();
        let _ = text[..at].parse::<RegisterLayout>();
    }
}
