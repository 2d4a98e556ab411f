//! The few things found last, for a caller that looks the same ones up over and over (a
//! replayed step's calls share their names and arguments as `Arc`s): a short list scanned
//! before the real look-up, replaced oldest first.

/// At most [`Recent::KEPT`] items, the oldest replaced first.
#[derive(Debug)]
pub struct Recent<T> {
    items: Vec<T>,
    next: usize,
}

impl<T> Default for Recent<T> {
    fn default() -> Self {
        Recent {
            items: Vec::new(),
            next: 0,
        }
    }
}

impl<T> Recent<T> {
    /// How many it keeps (a replay interleaves a few steps).
    pub const KEPT: usize = 8;

    /// The first kept item `is` picks.
    pub fn find(&self, is: impl FnMut(&&T) -> bool) -> Option<&T> {
        self.items.iter().find(is)
    }

    /// Keeps `item`, forgetting the oldest beyond [`Recent::KEPT`].
    pub fn keep(&mut self, item: T) {
        if self.items.len() < Self::KEPT {
            self.items.push(item);
        } else if let Some(slot) = self.items.get_mut(self.next) {
            *slot = item;
            self.next = (self.next + 1) % Self::KEPT;
        }
    }
}
