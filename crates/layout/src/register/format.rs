//! Text form of register layouts.
//!
//! ```text
//! layout   := item ('.' item)*
//! item     := primitive '(' sizes? ')'        primitive: local | spatial | column_local | column_spatial
//!           | 'replicate' '(' count ')'
//!           | 'layout' '(' 'shape' '=' '[' sizes? ']' ','
//!                          'modes' '=' '[' ('[' sizes? ']'),* ']' ','
//!                          'threads' '=' '[' thread,* ']' ','
//!                          'locals' '=' '[' mode,* ']' ')'
//! thread   := mode | 'rep' '(' count ')'
//! mode     := 'd' DIM '.' INDEX                  (mode INDEX of dimension DIM; 0 = most significant)
//! ```
//!
//! `a.b` means `a.compose(b)`. `replicate(N)` takes its rank from the other items, so a chain of
//! only replicates is rejected (write `local(1,1).replicate(4)`). Display prints a chain of
//! primitives whenever the layout is one, and the explicit `layout(..)` form otherwise; both
//! parse back to an equal layout.

use std::fmt;
use std::str::FromStr;

use super::{ModeRef, Primitive, RegisterLayout, ThreadEntry};
use crate::text::{Cursor, Tok};
use crate::ParseLayoutError;

/// One step of a chain of primitives.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ChainItem {
    Primitive(Primitive, Vec<usize>),
    Replicate(usize),
}

impl RegisterLayout {
    /// A chain of primitives (outermost first) whose composition is `self`, if one is found:
    /// the shorter of the chains found by peeling from the outside and from the inside,
    /// preferring the outside one (it keeps the order in which chains are usually written).
    fn as_chain(&self) -> Option<Vec<ChainItem>> {
        match (self.peel_chain(true), self.peel_chain(false)) {
            (Some(outer), Some(inner)) if inner.len() < outer.len() => Some(inner),
            (Some(outer), _) => Some(outer),
            (None, inner) => inner,
        }
    }

    /// Peels primitives off one end. The outermost primitive of a chain owns the most
    /// significant remaining mode of each dimension it touches and the first remaining digits
    /// of one list; the innermost one the least significant modes and the last digits.
    fn peel_chain(&self, from_outside: bool) -> Option<Vec<ChainItem>> {
        let rank = self.rank();
        // Remaining modes of dimension d: indices front[d]..back[d].
        let mut front = vec![0; rank];
        let mut back: Vec<usize> = self.modes.iter().map(Vec::len).collect();
        let mut threads: &[ThreadEntry] = &self.threads;
        let mut locals: &[ModeRef] = &self.locals;
        let mut chain = Vec::new();

        // Walking from the peeled end, the longest run of modes that can form one primitive.
        let run = |walk: &mut dyn Iterator<Item = ModeRef>, front: &[usize], back: &[usize]| {
            let mut taken: Vec<ModeRef> = Vec::new();
            for m in walk {
                let at_end = if from_outside {
                    m.index == front[m.dim]
                } else {
                    m.index + 1 == back[m.dim]
                };
                if !at_end || taken.iter().any(|t| t.dim == m.dim) {
                    break;
                }
                if taken.len() >= 2 {
                    let increasing = taken[0].dim < taken[1].dim;
                    if (taken[taken.len() - 1].dim < m.dim) != increasing {
                        break;
                    }
                }
                taken.push(m);
            }
            taken
        };
        let make = |taken: &[ModeRef], row: Primitive, column: Primitive| {
            let mut shape = vec![1; rank];
            for m in taken {
                shape[m.dim] = self.modes[m.dim][m.index];
            }
            // Row-major lists have increasing dims; walking from the inside reverses them.
            let walk_increasing = taken.len() >= 2 && taken[0].dim < taken[1].dim;
            let kind = if taken.len() < 2 || walk_increasing == from_outside {
                row
            } else {
                column
            };
            ChainItem::Primitive(kind, shape)
        };
        loop {
            let mut local_walk: Box<dyn Iterator<Item = ModeRef>> = if from_outside {
                Box::new(locals.iter().copied())
            } else {
                Box::new(locals.iter().rev().copied())
            };
            let local_run = run(&mut local_walk, &front, &back);
            let as_mode = |entry: &ThreadEntry| match *entry {
                ThreadEntry::Mode(m) => Some(m),
                ThreadEntry::Replicate(_) => None,
            };
            let mut thread_walk: Box<dyn Iterator<Item = ModeRef>> = if from_outside {
                Box::new(threads.iter().map_while(as_mode))
            } else {
                Box::new(threads.iter().rev().map_while(as_mode))
            };
            let thread_run = run(&mut thread_walk, &front, &back);
            let end_entry = if from_outside {
                threads.first()
            } else {
                threads.last()
            };
            let taken = if !local_run.is_empty() {
                chain.push(make(&local_run, Primitive::Local, Primitive::ColumnLocal));
                locals = if from_outside {
                    &locals[local_run.len()..]
                } else {
                    &locals[..locals.len() - local_run.len()]
                };
                local_run
            } else if !thread_run.is_empty() {
                chain.push(make(
                    &thread_run,
                    Primitive::Spatial,
                    Primitive::ColumnSpatial,
                ));
                threads = if from_outside {
                    &threads[thread_run.len()..]
                } else {
                    &threads[..threads.len() - thread_run.len()]
                };
                thread_run
            } else if let Some(&ThreadEntry::Replicate(n)) = end_entry {
                chain.push(ChainItem::Replicate(n));
                threads = if from_outside {
                    &threads[1..]
                } else {
                    &threads[..threads.len() - 1]
                };
                Vec::new()
            } else {
                break;
            };
            for m in taken {
                if from_outside {
                    front[m.dim] += 1;
                } else {
                    back[m.dim] -= 1;
                }
            }
        }
        if !threads.is_empty() || !locals.is_empty() {
            return None;
        }
        if !from_outside {
            chain.reverse();
        }
        // A chain of only replicates (or nothing) needs an item that carries the rank.
        if !chain
            .iter()
            .any(|item| matches!(item, ChainItem::Primitive(..)))
        {
            chain.insert(0, ChainItem::Primitive(Primitive::Local, vec![1; rank]));
        }
        // The peeling is a heuristic; only print a chain that provably denotes `self`.
        (evaluate_chain(&chain, rank).as_ref() == Some(self)).then_some(chain)
    }

    fn fmt_explicit(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |items: Vec<String>| items.join(",");
        let mode = |m: &ModeRef| format!("d{}.{}", m.dim, m.index);
        write!(
            f,
            "layout(shape=[{}], modes=[{}], threads=[{}], locals=[{}])",
            list(self.shape.iter().map(usize::to_string).collect()),
            list(
                self.modes
                    .iter()
                    .map(|sizes| format!(
                        "[{}]",
                        list(sizes.iter().map(usize::to_string).collect())
                    ))
                    .collect()
            ),
            list(
                self.threads
                    .iter()
                    .map(|entry| match entry {
                        ThreadEntry::Mode(m) => mode(m),
                        ThreadEntry::Replicate(n) => format!("rep({n})"),
                    })
                    .collect()
            ),
            list(self.locals.iter().map(mode).collect()),
        )
    }
}

fn evaluate_chain(chain: &[ChainItem], rank: usize) -> Option<RegisterLayout> {
    let mut result = RegisterLayout::try_replicate(rank, 1).ok()?;
    for item in chain {
        let next = match item {
            ChainItem::Primitive(kind, shape) => RegisterLayout::primitive(*kind, shape).ok()?,
            ChainItem::Replicate(n) => RegisterLayout::try_replicate(rank, *n).ok()?,
        };
        result = result.compose(&next).ok()?;
    }
    Some(result)
}

impl fmt::Display for RegisterLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(chain) = self.as_chain() else {
            return self.fmt_explicit(f);
        };
        for (i, item) in chain.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            match item {
                ChainItem::Primitive(kind, shape) => {
                    let sizes: Vec<String> = shape.iter().map(usize::to_string).collect();
                    write!(f, "{}({})", kind.name(), sizes.join(","))?;
                }
                ChainItem::Replicate(n) => write!(f, "replicate({n})")?,
            }
        }
        Ok(())
    }
}

/// A parsed chain item before ranks are resolved.
enum ParsedItem {
    Layout(RegisterLayout, usize),
    Replicate(usize, usize),
}

fn parse_mode(cursor: &mut Cursor<'_>) -> Result<ModeRef, ParseLayoutError> {
    let expected = "a mode like d0.1 (dimension 0, mode 1)";
    let (name, pos) = cursor.expect_ident(expected)?;
    let dim = name
        .strip_prefix('d')
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse::<usize>().ok())
        .ok_or_else(|| {
            ParseLayoutError::new(pos, format!("expected {expected}, found '{name}'"))
        })?;
    cursor.expect(
        b'.',
        "'.' between a mode's dimension and index (as in d0.1)",
    )?;
    let (index, _) = cursor.expect_number("a mode index (as in d0.1)")?;
    Ok(ModeRef { dim, index })
}

fn parse_explicit(
    cursor: &mut Cursor<'_>,
    start: usize,
) -> Result<RegisterLayout, ParseLayoutError> {
    cursor.expect_key("shape")?;
    cursor.expect(b'[', "'[' to open the shape")?;
    let shape = cursor.size_list(b']')?;
    cursor.expect(b']', "',' or ']' in the shape")?;
    cursor.expect(b',', "',' after the shape")?;

    cursor.expect_key("modes")?;
    cursor.expect(b'[', "'[' to open the mode lists")?;
    let mut modes = Vec::new();
    if cursor.peek().tok != Tok::Punct(b']') {
        loop {
            cursor.expect(b'[', "'[' to open the modes of a dimension")?;
            modes.push(cursor.size_list(b']')?);
            cursor.expect(b']', "',' or ']' in the modes of a dimension")?;
            if !cursor.eat(b',') {
                break;
            }
        }
    }
    cursor.expect(b']', "',' or ']' after the modes of a dimension")?;
    cursor.expect(b',', "',' after the modes")?;

    cursor.expect_key("threads")?;
    cursor.expect(b'[', "'[' to open the thread list")?;
    let mut threads = Vec::new();
    if cursor.peek().tok != Tok::Punct(b']') {
        loop {
            if cursor.peek().tok == Tok::Ident("rep") {
                cursor.next();
                cursor.expect(b'(', "'(' after 'rep'")?;
                let count = cursor.expect_size("a replication count (a number at least 1)")?;
                cursor.expect(b')', "')' after the replication count")?;
                threads.push(ThreadEntry::Replicate(count));
            } else {
                threads.push(ThreadEntry::Mode(parse_mode(cursor)?));
            }
            if !cursor.eat(b',') {
                break;
            }
        }
    }
    cursor.expect(b']', "',' or ']' in the thread list")?;
    cursor.expect(b',', "',' after the thread list")?;

    cursor.expect_key("locals")?;
    cursor.expect(b'[', "'[' to open the local list")?;
    let mut locals = Vec::new();
    if cursor.peek().tok != Tok::Punct(b']') {
        loop {
            locals.push(parse_mode(cursor)?);
            if !cursor.eat(b',') {
                break;
            }
        }
    }
    cursor.expect(b']', "',' or ']' in the local list")?;
    cursor.expect(b')', "')' to close 'layout('")?;

    if shape.len() != modes.len() {
        return Err(ParseLayoutError::new(
            start,
            format!(
                "the shape has {} dimensions but modes are given for {}",
                shape.len(),
                modes.len()
            ),
        ));
    }
    let layout = RegisterLayout::from_parts(&modes, &threads, &locals)
        .map_err(|error| ParseLayoutError::new(start, error.0))?;
    if layout.shape() != shape.as_slice() {
        return Err(ParseLayoutError::new(
            start,
            format!(
                "the shape {shape:?} is not the product of the modes ({:?})",
                layout.shape()
            ),
        ));
    }
    Ok(layout)
}

fn parse_item(cursor: &mut Cursor<'_>) -> Result<ParsedItem, ParseLayoutError> {
    let expected = "a layout (local, spatial, column_local, column_spatial, replicate or layout)";
    let (name, pos) = cursor.expect_ident(expected)?;
    let primitive = Primitive::ALL.into_iter().find(|p| p.name() == name);
    if primitive.is_none() && name != "replicate" && name != "layout" {
        return Err(ParseLayoutError::new(
            pos,
            format!("expected {expected}, found '{name}'"),
        ));
    }
    cursor.expect(b'(', &format!("'(' after '{name}'"))?;
    let item = if let Some(kind) = primitive {
        let shape = cursor.size_list(b')')?;
        cursor.expect(b')', &format!("',' or ')' in '{name}('"))?;
        let layout = RegisterLayout::primitive(kind, &shape)
            .map_err(|error| ParseLayoutError::new(pos, error.0))?;
        ParsedItem::Layout(layout, pos)
    } else if name == "replicate" {
        let count = cursor.expect_size("a replication count (a number at least 1)")?;
        cursor.expect(b')', "')' after the replication count")?;
        ParsedItem::Replicate(count, pos)
    } else {
        ParsedItem::Layout(parse_explicit(cursor, pos)?, pos)
    };
    Ok(item)
}

impl FromStr for RegisterLayout {
    type Err = ParseLayoutError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut cursor = Cursor::new(text)?;
        let mut items = vec![parse_item(&mut cursor)?];
        while cursor.eat(b'.') {
            items.push(parse_item(&mut cursor)?);
        }
        cursor.expect_end()?;

        let Some(rank) = items.iter().find_map(|item| match item {
            ParsedItem::Layout(layout, _) => Some(layout.rank()),
            ParsedItem::Replicate(..) => None,
        }) else {
            return Err(ParseLayoutError::new(
                0,
                "a chain of only replicate(..) has no rank; add an item with a shape, \
                 as in local(1,1).replicate(4)",
            ));
        };
        let mut result: Option<RegisterLayout> = None;
        for item in items {
            let (layout, pos) = match item {
                ParsedItem::Layout(layout, pos) => {
                    if layout.rank() != rank {
                        return Err(ParseLayoutError::new(
                            pos,
                            format!(
                                "this item has rank {} but earlier items have rank {rank}",
                                layout.rank()
                            ),
                        ));
                    }
                    (layout, pos)
                }
                ParsedItem::Replicate(count, pos) => (
                    RegisterLayout::try_replicate(rank, count)
                        .map_err(|error| ParseLayoutError::new(pos, error.0))?,
                    pos,
                ),
            };
            result = Some(match result {
                None => layout,
                Some(outer) => outer
                    .compose(&layout)
                    .map_err(|error| ParseLayoutError::new(pos, error.0))?,
            });
        }
        result.ok_or_else(|| ParseLayoutError::new(0, "expected a layout"))
    }
}
