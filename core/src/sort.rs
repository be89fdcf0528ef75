//! One small in-place sort for the module's few sorts (configuration order,
//! a shard rewritten in key order, the lease report's ends by age).
//!
//! A heapsort: O(n log n), no allocation, and a few hundred bytes of code per
//! use, where the standard library's pattern-defeating quicksort brings about
//! 3 KB per element type into `dist/huntgate.wasm`. None of these sorts is on a
//! request path.

/// Sorts `items` in place so that no item is `less` than the one before it
/// (unstable: equal items may be reordered).
pub fn sort_by<T>(items: &mut [T], mut less: impl FnMut(&T, &T) -> bool) {
    let mut is_less = |items: &[T], a: usize, b: usize| match (items.get(a), items.get(b)) {
        (Some(x), Some(y)) => less(x, y),
        _ => false,
    };
    // Moves items[node] down until neither child within items[..end] is greater.
    let mut sift_down = |items: &mut [T], mut node: usize, end: usize| loop {
        let mut child = 2 * node + 1;
        if child >= end {
            break;
        }
        if child + 1 < end && is_less(items, child, child + 1) {
            child += 1;
        }
        if !is_less(items, node, child) {
            break;
        }
        items.swap(node, child);
        node = child;
    };
    let len = items.len();
    for node in (0..len / 2).rev() {
        sift_down(items, node, len);
    }
    for end in (1..len).rev() {
        items.swap(0, end);
        sift_down(items, 0, end);
    }
}

/// Sorts `items` in ascending order (unstable).
pub fn sort<T: Ord>(items: &mut [T]) {
    sort_by(items, |a, b| a < b);
}

#[cfg(test)]
mod tests {
    use super::{sort, sort_by};

    #[test]
    fn sorts_small_and_edge_inputs() {
        for mut items in [vec![], vec![1], vec![2, 1], vec![3, 3, 1, 2, 3, 0, 0]] {
            let mut expected = items.clone();
            expected.sort_unstable();
            sort(&mut items);
            assert_eq!(items, expected);
        }
    }

    #[test]
    fn sorts_by_a_key() {
        let mut ends = vec![(7u64, 30u64), (1, 10), (9, 20), (4, 10)];
        sort_by(&mut ends, |a, b| a.1 < b.1);
        let ages: Vec<u64> = ends.iter().map(|(_, at)| *at).collect();
        assert_eq!(ages, [10, 10, 20, 30]);
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod properties {
    use proptest::prelude::*;

    proptest! {
        /// The same order as the standard library's sort, for any input.
        #[test]
        fn agrees_with_the_standard_sort(mut items in proptest::collection::vec(0u16..50, 0..300)) {
            let mut expected = items.clone();
            expected.sort_unstable();
            super::sort(&mut items);
            prop_assert_eq!(items, expected);
        }
    }
}
