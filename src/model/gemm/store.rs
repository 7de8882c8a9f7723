//! Where a packed matrix's arrays live: built in memory by the quantizer, or mapped from the
//! weight cache (`model/cache.rs`). The kernels only ever see a slice, so a matrix read from the
//! cache is used where it lies in the page cache: no allocation to zero, no copy, and the
//! pages are shared by every fovea process that maps the same file.

use std::marker::PhantomData;
use std::ops::{Deref, Range};
use std::sync::Arc;

/// An immutable array of `T`: owned, or a range of a mapped file.
pub enum Store<T> {
    Owned(Vec<T>),
    Mapped {
        map: Arc<memmap2::Mmap>,
        /// Byte range in the map (aligned for `T`, a whole number of `T`s).
        bytes: Range<usize>,
        kind: PhantomData<T>,
    },
}

impl<T: bytemuck::Pod> Store<T> {
    /// `bytes` of `map` as `T`s, when the range lies in the map and is aligned for `T`.
    pub fn mapped(map: &Arc<memmap2::Mmap>, bytes: Range<usize>) -> Option<Store<T>> {
        let slice = map.get(bytes.clone())?;
        bytemuck::try_cast_slice::<u8, T>(slice).ok()?;
        Some(Store::Mapped {
            map: map.clone(),
            bytes,
            kind: PhantomData,
        })
    }
}

impl<T: bytemuck::Pod> Deref for Store<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            Store::Owned(values) => values,
            // Checked in `Store::mapped`: in range and aligned.
            Store::Mapped { map, bytes, .. } => bytemuck::cast_slice(&map[bytes.clone()]),
        }
    }
}

impl<T: Clone> Clone for Store<T> {
    fn clone(&self) -> Self {
        match self {
            Store::Owned(values) => Store::Owned(values.clone()),
            Store::Mapped { map, bytes, .. } => Store::Mapped {
                map: map.clone(),
                bytes: bytes.clone(),
                kind: PhantomData,
            },
        }
    }
}

impl<T> From<Vec<T>> for Store<T> {
    fn from(values: Vec<T>) -> Self {
        Store::Owned(values)
    }
}
