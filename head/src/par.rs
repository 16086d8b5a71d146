//! Data-parallel map over a slice on scoped threads, in order.

/// `items.iter().map(f)` computed on up to `workers` threads (0 = one per
/// core), each taking a contiguous chunk of at least `min_chunk` items;
/// results keep the order of `items`. One chunk runs on the caller's thread.
pub fn map<T: Sync, U: Send>(
    items: &[T],
    workers: usize,
    min_chunk: usize,
    f: impl Fn(&T) -> U + Sync,
) -> Vec<U> {
    let workers = match workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let chunk = items.len().div_ceil(workers).max(min_chunk).max(1);
    if items.len() <= chunk {
        return items.iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<U>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("parallel map workers do not panic"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_order_for_any_split() {
        let items: Vec<u32> = (0..1000).collect();
        for (workers, min) in [(1, 1), (2, 1), (3, 7), (8, 500), (0, 1)] {
            let got = super::map(&items, workers, min, |x| x * 2);
            let want: Vec<u32> = items.iter().map(|x| x * 2).collect();
            assert_eq!(got, want, "workers={workers} min={min}");
        }
        assert!(super::map(&[] as &[u32], 2, 1, |x| *x).is_empty());
    }
}
