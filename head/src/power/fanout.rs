//! Running one job per node with at most `limit` jobs at a time (Warewulf's
//! "fan-out"), on plain threads: the jobs are child processes, so a thread
//! per running job is cheap and needs no runtime. Shared by `wwctl power`,
//! `wwctl node sensors` and `wwctl ssh`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `job` on every item, at most `limit` (at least 1) at once, and
/// returns the results in the order of `items`. `done` is called after each
/// job (from the worker thread), e.g. to advance a progress bar.
pub fn run<T, R>(
    items: &[T],
    limit: usize,
    job: impl Fn(&T) -> R + Sync,
    done: impl Fn(&R) + Sync,
) -> Vec<R>
where
    T: Sync,
    R: Send,
{
    let workers = limit.max(1).min(items.len());
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let result = job(item);
                    done(&result);
                    results.lock().expect("a job panicked while storing")[i] = Some(result);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("a job panicked while storing")
        .into_iter()
        .map(|r| r.expect("every index below len was taken by a worker"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keeps_order_and_honours_the_limit() {
        let items: Vec<u32> = (0..40).collect();
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let finished = AtomicUsize::new(0);
        let out = run(
            &items,
            3,
            |i| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
                running.fetch_sub(1, Ordering::SeqCst);
                i * 2
            },
            |_| {
                finished.fetch_add(1, Ordering::SeqCst);
            },
        );
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert_eq!(finished.load(Ordering::SeqCst), 40);
    }

    #[test]
    fn zero_limit_still_runs_and_empty_input_is_fine() {
        assert_eq!(run(&[1, 2], 0, |i| i + 1, |_| {}), [2, 3]);
        assert!(run(&[] as &[u8], 8, |i| *i, |_| {}).is_empty());
    }
}
