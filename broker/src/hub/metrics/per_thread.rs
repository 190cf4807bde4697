//! A counter and a histogram for the series written on every message (frames, bytes, plugin
//! calls), kept in one part per thread and summed when scraped.
//!
//! prometheus-client's counter is one atomic and its histogram one mutex, shared by every
//! connection of a route or every call of a plugin: with connections on two cores, each message
//! moved those cache lines from one core to the other, a measurable part of its cost. Here a thread
//! writes only its own part (`thread_local`), on a cache line of its own (`CachePadded`: parts of
//! adjacent threads are adjacent in memory); a scrape reads them all.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use thread_local::ThreadLocal;

/// Adds `n` to a value only the current thread writes: a load and a store, not a locked add.
fn add(value: &AtomicU64, n: u64) {
    value.store(value.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// A monotonic counter; clones share one value.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<ThreadLocal<CachePadded<AtomicU64>>>);

impl Counter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        add(self.0.get_or_default(), n);
    }

    /// The sum of every thread's part.
    pub fn get(&self) -> u64 {
        self.0.iter().map(|part| part.load(Ordering::Relaxed)).fold(0, u64::wrapping_add)
    }
}

impl TypedMetric for Counter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Counter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A histogram of fixed buckets (and `+Inf`); clones share one set of values.
#[derive(Debug, Clone)]
pub struct Histogram {
    /// Upper bounds, ascending, the last `+Inf`.
    bounds: Arc<[f64]>,
    parts: Arc<ThreadLocal<CachePadded<Part>>>,
}

#[derive(Debug)]
struct Part {
    /// The sum of observations, as `f64` bits.
    sum: AtomicU64,
    count: AtomicU64,
    /// Observations per bucket (not cumulative), in the order of `bounds`.
    buckets: Box<[AtomicU64]>,
}

impl Histogram {
    /// Buckets with these upper bounds (non-finite ones are dropped), and `+Inf`.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Histogram {
        let mut bounds: Vec<f64> = bounds.into_iter().filter(|bound| bound.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.push(f64::INFINITY);
        Histogram { bounds: bounds.into(), parts: Arc::default() }
    }

    pub fn observe(&self, value: f64) {
        let part = self.parts.get_or(|| {
            CachePadded::new(Part {
                sum: AtomicU64::new(0f64.to_bits()),
                count: AtomicU64::new(0),
                buckets: self.bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            })
        });
        // Only this thread writes its part: a plain read-modify-write is not racing anyone.
        let sum = f64::from_bits(part.sum.load(Ordering::Relaxed)) + value;
        part.sum.store(sum.to_bits(), Ordering::Relaxed);
        add(&part.count, 1);
        // NaN counts in `+Inf`, as prometheus-client's histogram counts it.
        let bucket = self.bounds.iter().position(|bound| value <= *bound).unwrap_or(self.bounds.len() - 1);
        add(&part.buckets[bucket], 1);
    }

    /// (sum, count, observations per bucket with its upper bound).
    pub fn get(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut sum = 0.0;
        let mut count = 0;
        let mut buckets: Vec<(f64, u64)> = self.bounds.iter().map(|bound| (*bound, 0)).collect();
        for part in self.parts.iter() {
            sum += f64::from_bits(part.sum.load(Ordering::Relaxed));
            count += part.count.load(Ordering::Relaxed);
            for ((_, total), observed) in buckets.iter_mut().zip(part.buckets.iter()) {
                *total += observed.load(Ordering::Relaxed);
            }
        }
        (sum, count, buckets)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.get();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn parts_written_on_many_threads_add_up_in_the_scrape() {
        let counter = Counter::default();
        let histogram = Histogram::new([0.001, 0.01]);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        counter.inc_by(2);
                        histogram.observe(0.007_812_5);
                    }
                    histogram.observe(1.0);
                });
            }
        });
        assert_eq!(counter.get(), 8000);
        let mut registry = Registry::default();
        registry.register("frames", "Frames", counter);
        registry.register("call_seconds", "Calls", histogram);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains("# TYPE frames counter\nframes_total 8000\n"), "{text}");
        assert!(text.contains("call_seconds_count 4004\n"), "{text}");
        assert!(text.contains("call_seconds_sum 35.25\n"), "{text}");
        assert!(text.contains("call_seconds_bucket{le=\"0.001\"} 0\n"), "{text}");
        assert!(text.contains("call_seconds_bucket{le=\"0.01\"} 4000\n"), "{text}");
        assert!(text.contains("call_seconds_bucket{le=\"+Inf\"} 4004\n"), "{text}");
    }
}
