//! Tables computed once per register layout (and per pair of layouts for broadcasting), cached
//! for the whole run.

use std::collections::HashMap;
use std::rc::Rc;

use anybit_layout::RegisterLayout;

use crate::error::{internal, Fault};

/// The most (thread, local) slots a register tensor may have in the interpreter.
pub(crate) const MAX_SLOTS: usize = 1 << 24;

/// A register layout with its tables. Slot `s = thread · local_size + local` is local element
/// `local` of thread `thread`; elements are numbered row-major over the shape ("linear index").
pub(crate) struct LayoutInfo {
    /// Distinct per layout within a run.
    pub id: usize,
    pub layout: RegisterLayout,
    pub shape: Vec<usize>,
    pub num_threads: usize,
    pub local_size: usize,
    pub num_elements: usize,
    /// Coordinates of every slot, `rank` values per slot.
    pub slot_coords: Vec<u32>,
    /// Linear index of the element every slot holds.
    pub slot_element: Vec<u32>,
    /// The first owner (lowest thread, then lowest local index) of every element: the slot
    /// whose value is the element's logical value.
    pub first_owner: Vec<u32>,
}

impl LayoutInfo {
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn num_slots(&self) -> usize {
        self.num_threads * self.local_size
    }

    /// Coordinates of slot `slot`.
    #[inline]
    pub fn coords(&self, slot: usize) -> &[u32] {
        let rank = self.rank();
        &self.slot_coords[slot * rank..(slot + 1) * rank]
    }

    /// Coordinates of element `element` (a linear index).
    pub fn element_coords(&self, element: usize) -> &[u32] {
        self.coords(self.first_owner[element] as usize)
    }

    fn build(id: usize, layout: &RegisterLayout) -> Result<LayoutInfo, Fault> {
        let shape = layout.shape().to_vec();
        let rank = shape.len();
        let num_threads = layout.num_threads();
        let local_size = layout.local_size();
        let num_elements = layout.num_elements();
        let slots = num_threads
            .checked_mul(local_size)
            .filter(|&slots| slots <= MAX_SLOTS && num_elements <= MAX_SLOTS)
            .ok_or_else(|| {
                Fault::TooLarge(format!(
                    "the register layout {layout} has {num_threads} threads × {local_size} \
                     elements; the interpreter handles at most {MAX_SLOTS} slots"
                ))
            })?;
        let mut strides = vec![1usize; rank];
        for dim in (0..rank.saturating_sub(1)).rev() {
            strides[dim] = strides[dim + 1] * shape[dim + 1];
        }
        let mut slot_coords = Vec::with_capacity(slots * rank);
        let mut slot_element = Vec::with_capacity(slots);
        let mut first_owner = vec![u32::MAX; num_elements];
        let mut coords = vec![0usize; rank];
        for thread in 0..num_threads {
            for local in 0..local_size {
                layout.coordinates_into(thread, local, &mut coords);
                let element: usize = coords.iter().zip(&strides).map(|(c, s)| c * s).sum();
                let slot = slot_element.len() as u32;
                slot_coords.extend(coords.iter().map(|&c| c as u32));
                slot_element.push(element as u32);
                // Slots are visited by increasing thread, then local index: the first visit is
                // the first owner.
                if first_owner[element] == u32::MAX {
                    first_owner[element] = slot;
                }
            }
        }
        // A register layout covers its shape (anybit-layout's invariant).
        if first_owner.contains(&u32::MAX) {
            return Err(internal(format!(
                "the register layout {layout} leaves some elements without an owner"
            )));
        }
        Ok(LayoutInfo {
            id,
            layout: layout.clone(),
            shape,
            num_threads,
            local_size,
            num_elements,
            slot_coords,
            slot_element,
            first_owner,
        })
    }
}

/// The run's cache of layout tables.
#[derive(Default)]
pub(crate) struct LayoutCache {
    layouts: HashMap<RegisterLayout, Rc<LayoutInfo>>,
    broadcasts: HashMap<(usize, usize), Rc<[u32]>>,
}

impl LayoutCache {
    /// The tables of `layout`.
    pub fn get(&mut self, layout: &RegisterLayout) -> Result<Rc<LayoutInfo>, Fault> {
        if let Some(info) = self.layouts.get(layout) {
            return Ok(info.clone());
        }
        let info = Rc::new(LayoutInfo::build(self.layouts.len(), layout)?);
        self.layouts.insert(layout.clone(), info.clone());
        Ok(info)
    }

    /// For every slot of `result`, the slot of `operand` (a broadcast operand: same rank, every
    /// size equal to the result's or 1) that the same thread reads: the thread's own copy of
    /// the element with the broadcast dimensions set to 0. The verifier checked that every
    /// thread holds the copies it needs.
    pub fn broadcast(
        &mut self,
        result: &LayoutInfo,
        operand: &LayoutInfo,
    ) -> Result<Rc<[u32]>, Fault> {
        if let Some(map) = self.broadcasts.get(&(result.id, operand.id)) {
            return Ok(map.clone());
        }
        let rank = result.rank();
        let mut wanted = vec![0usize; rank];
        let mut map = Vec::with_capacity(result.num_slots());
        for slot in 0..result.num_slots() {
            let thread = slot / result.local_size;
            for ((w, &c), &size) in wanted
                .iter_mut()
                .zip(result.coords(slot))
                .zip(&operand.shape)
            {
                *w = if size == 1 { 0 } else { c as usize };
            }
            let Some(local) = operand.layout.local_index_of(thread, &wanted) else {
                return Err(internal(format!(
                    "broadcast operand of layout {} is not held by the right threads: thread \
                     {thread} holds element {:?} of the result but not element {wanted:?} of \
                     the operand",
                    operand.layout,
                    result.coords(slot)
                )));
            };
            map.push((thread * operand.local_size + local) as u32);
        }
        let map: Rc<[u32]> = map.into();
        self.broadcasts.insert((result.id, operand.id), map.clone());
        Ok(map)
    }
}
