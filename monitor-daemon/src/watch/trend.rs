//! Robust growth statistics: is a series of (time, outstanding bytes) samples leaking?
//!
//! This module owns the leak rule. `leakmon trace` applies it to each stack's outstanding bytes
//! sampled every interval, and the daemon applies it to per-process RSS, VSZ and descriptor
//! counts. It holds two classical non-parametric statistics, both insensitive to outliers and to
//! the shape of the noise:
//!
//! * [`theil_sen`]: the Theil-Sen slope, the median of the slopes between every pair of points;
//! * [`mann_kendall`]: the Mann-Kendall trend test, with the variance corrected for ties and a
//!   continuity-corrected normal score `z`.
//!
//! # The rule
//!
//! [`assess`] says a series is leaking when it *keeps growing across the window*, which is
//! stricter than "ends higher than it started". With the thresholds of [`LeakRule`]:
//!
//! 1. there are at least `min_samples` points (non-finite points are ignored);
//! 2. the Theil-Sen slope over the whole window is positive;
//! 3. Mann-Kendall finds an upward trend: `z >= min_z` (one-sided);
//! 4. the series is still growing at the end: the Theil-Sen slope of the last half of the window
//!    is positive and at least `min_recent_fraction` of the whole-window slope. A cache that
//!    fills and then plateaus fails here;
//! 5. the last value exceeds the largest value of the first half of the window, so memory that
//!    was released and built up again (a restart, a cache flush, the teeth of a sawtooth) does
//!    not count unless the new peak tops the old one;
//! 6. the rise fitted over the window (slope × span) is at least `min_signal_to_noise` times the
//!    robust noise, 1.4826 × the median absolute residual around the Theil-Sen line (an
//!    estimate of the noise's standard deviation). Noise, sawtooth batches and single steps fail
//!    here or at 3.
//!
//! The assessment records the first criterion that failed, in this order.
//!
//! Short windows are weak evidence. Pure noise passes every criterion in about 0.1 to 0.5% of
//! series of 6 to 16 samples, 1 in 2000 with 20, and in none of 20 000 series of 30 or more
//! samples (measured on Gaussian and Laplace noise). A step early in a short window followed by a
//! noisy plateau passes about as often. Windows of at least 30 samples are advisable.
//!
//! A leak followed by a restart (the series drops to near zero and grows again) is not a leak
//! over a window in which the drop happens at or after the middle: the last value stays below
//! the first half's peak (criterion 5). The memory that was leaked has been given back, and the
//! regrowth alone is too short to judge; the next window, which starts after the drop, sees it
//! whole. When the drop is early enough that the regrowth tops the earlier peak, the series is
//! leaking by every criterion and is reported.
//!
//! # Turnover: growth matched by the release of older memory
//!
//! A trace sees only the allocations made while it runs. A cache that filled before the trace
//! attached and now replaces one old entry at a time (frees the oldest, allocates a new one) is
//! flat in memory, yet its stack's outstanding bytes climb until the whole cache has turned over
//! once, which can take far longer than any window: by the rule above it is leaking. The kernel
//! programs count the frees of addresses the trace never saw allocated by *freeing site* (the
//! return address into `free`'s caller), with the freed bytes where the allocator keeps them in a
//! header (glibc's chunk size; jemalloc, tcmalloc and mimalloc frees are counted only), and
//! [`match_turnover`] sets those releases against the growing stacks:
//!
//! 1. Only stacks that the rule above finds leaking are considered, each with its rise over the
//!    window (the fitted slope × span) and its mean outstanding block size. Memory mapped by
//!    the program itself (`mmap`) is never offset by `free`.
//! 2. Each site's released bytes over the same span are spent at most once. They go first to
//!    stacks with a frame in the same function as the site (the code that frees is the code that
//!    allocates, or one of its callers: `cache_insert` frees the oldest entry and allocates the
//!    new one), then, for sites whose bytes are known, to stacks whose blocks are the size of the
//!    freed ones (`min_block_ratio` to `max_block_ratio` of the stack's mean block, plus 32 bytes
//!    of allocator rounding). Within each pass the (stack, site) pairs whose amounts agree best go
//!    first, so a stack and the site that offsets it find each other before a leak of another
//!    size or rate can take the site's bytes. A site counted without bytes offsets, in the first
//!    pass only, its frees × the stack's mean block.
//! 3. A stack is *turnover*, not leaking, when the releases matched to it cover at least
//!    `min_cover` of its rise. A stack that grows with no matching release stays leaking, even
//!    while another stack of the same process turns over.
//!
//! The process's own memory is the other half of the evidence, and the report gives it beside
//! the verdict: in turnover the released memory is reused by the new allocations, so the heap
//! stays flat and its live allocations (the traced allocations less the older memory released)
//! do not grow; heap growth beside flat live allocations is memory retained by the allocator.
//! A report whose heap grew at half the rate of its turnover stacks or more says so in a note:
//! the released memory was not reused (fragmentation), or the verdict is wrong.
//!
//! Failure modes, each of which ends when the older memory has been released:
//!
//! * A program that drains memory allocated before the window while it leaks new memory of the
//!   same size (no shared function) looks like turnover; the next window, once the old memory is
//!   gone, finds the leak.
//! * Two growing stacks that match one site equally well (same block size and rate, no shared
//!   function) share its bytes in the greedy order: one of them may keep the other's verdict.
//! * `realloc` of a block allocated before the window releases it unseen (the kernel programs
//!   count only `free`), so a buffer that keeps being reallocated larger stays leaking.
//! * With sampling (`--sample-rate`) the frees of unsampled allocations cannot be told from
//!   releases of older memory: no stack is judged turnover, and the report says so.
//! * Without symbols, sites and stacks share no function, and only sites with known bytes can
//!   match (by block size).

use std::cmp::Ordering;

/// Scale from the median absolute deviation to the standard deviation of normal noise.
const MAD_TO_SIGMA: f64 = 1.4826;

/// The median of pairwise slopes `Δy/Δx` of `points`, skipping pairs with equal `x` and points
/// with a non-finite coordinate. `None` when no pair is usable (fewer than two distinct times).
pub fn theil_sen(points: &[(f64, f64)]) -> Option<f64> {
    let usable: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let mut slopes = Vec::with_capacity(usable.len() * usable.len().saturating_sub(1) / 2);
    for (i, &(xi, yi)) in usable.iter().enumerate() {
        for &(xj, yj) in &usable[i + 1..] {
            if xj != xi {
                slopes.push((yj - yi) / (xj - xi));
            }
        }
    }
    median(&mut slopes)
}

/// [`theil_sen`] over at most `max_points` evenly spaced points of `points` (the first and the
/// last included), so that a long series costs no more than a short one.
pub fn theil_sen_thinned(points: &[(f64, f64)], max_points: usize) -> Option<f64> {
    let n = points.len();
    if n <= max_points.max(2) {
        return theil_sen(points);
    }
    let last = max_points.max(2) - 1;
    let thin: Vec<(f64, f64)> = (0..=last).map(|k| points[k * (n - 1) / last]).collect();
    theil_sen(&thin)
}

/// The result of a Mann-Kendall trend test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannKendall {
    /// Sum of `sign(x[j] - x[i])` over every pair `i < j`: positive for an upward trend.
    pub s: i64,
    /// Variance of `s` under the no-trend hypothesis, corrected for ties.
    pub variance: f64,
    /// Continuity-corrected normal score: `(s - 1) / √variance` for `s > 0`,
    /// `(s + 1) / √variance` for `s < 0`, 0 otherwise (and when the variance is 0).
    pub z: f64,
}

/// The Mann-Kendall trend test of `values`, taken in order. Non-finite values are ignored.
pub fn mann_kendall(values: &[f64]) -> MannKendall {
    let values: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let mut s: i64 = 0;
    for (i, &vi) in values.iter().enumerate() {
        for &vj in &values[i + 1..] {
            s += match vj.partial_cmp(&vi) {
                Some(Ordering::Greater) => 1,
                Some(Ordering::Less) => -1,
                _ => 0,
            };
        }
    }

    let n = values.len() as f64;
    let mut sorted = values;
    sorted.sort_by(f64::total_cmp);
    let mut tie_term = 0.0;
    for group in sorted.chunk_by(|a, b| a == b) {
        let t = group.len() as f64;
        tie_term += t * (t - 1.0) * (2.0 * t + 5.0);
    }
    let variance = ((n * (n - 1.0) * (2.0 * n + 5.0) - tie_term) / 18.0).max(0.0);

    let z = if variance <= 0.0 {
        0.0
    } else {
        match s.cmp(&0) {
            Ordering::Greater => (s - 1) as f64 / variance.sqrt(),
            Ordering::Less => (s + 1) as f64 / variance.sqrt(),
            Ordering::Equal => 0.0,
        }
    };
    MannKendall { s, variance, z }
}

/// Thresholds of the leak rule (see the module documentation for how each is used).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeakRule {
    /// Fewest samples to judge a series by. Default 6: with fewer, Mann-Kendall cannot reach
    /// `min_z` even for a strictly increasing series.
    pub min_samples: usize,
    /// Smallest Mann-Kendall `z` that counts as an upward trend. Default 2.33, the one-sided 1%
    /// level of the normal distribution.
    pub min_z: f64,
    /// Smallest ratio of the last half's slope to the whole window's. Default 0.3: a steady leak
    /// sits near 1, a cache that filled in the first half and then plateaued near 0.
    pub min_recent_fraction: f64,
    /// Smallest ratio of the fitted rise over the window to the robust noise. Default 3.5: pure
    /// noise that passes the other criteria reaches 3 to 3.4 now and then with 20 to 40
    /// samples, and so does a step early in the window followed by a noisy plateau. A linear
    /// leak that rises 6 noise standard deviations over a window of 12 to 60 samples is still
    /// found in 90 to 96% of windows.
    pub min_signal_to_noise: f64,
}

impl Default for LeakRule {
    fn default() -> Self {
        LeakRule {
            min_samples: 6,
            min_z: 2.33,
            min_recent_fraction: 0.3,
            min_signal_to_noise: 3.5,
        }
    }
}

/// A criterion of the leak rule, in the order [`assess`] checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criterion {
    /// 1: fewer than `min_samples` usable points.
    TooFewSamples,
    /// 2: the whole-window slope is not positive.
    NotGrowing,
    /// 3: Mann-Kendall `z` below `min_z`.
    NoSignificantTrend,
    /// 4: the last half's slope is not positive or below `min_recent_fraction` of the whole.
    NotGrowingAtEnd,
    /// 5: the last value does not exceed the first half's peak.
    BelowEarlierPeak,
    /// 6: the fitted rise is below `min_signal_to_noise` times the noise.
    BelowNoise,
}

/// What [`assess`] found about a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    /// Whether every criterion of the rule held.
    pub leaking: bool,
    /// Theil-Sen slope over the whole window, in units per second; 0 when it cannot be computed.
    pub slope_per_second: f64,
    /// Theil-Sen slope over the last half of the window; 0 when it cannot be computed.
    pub recent_slope_per_second: f64,
    /// Mann-Kendall test of the values in time order.
    pub trend: MannKendall,
    /// Fitted rise over the window: `slope_per_second` × (last time − first time).
    pub rise: f64,
    /// Robust noise: 1.4826 × median absolute residual around the Theil-Sen line.
    pub noise: f64,
    /// Usable points (finite time and value).
    pub samples: usize,
    /// The first criterion that failed; `None` exactly when `leaking`.
    pub failed: Option<Criterion>,
}

/// Applies `rule` to `points`, (time in seconds, value) pairs. The points need not be sorted;
/// points with a non-finite coordinate are ignored.
pub fn assess(points: &[(f64, f64)], rule: &LeakRule) -> Assessment {
    let mut points: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = points.len();

    let values: Vec<f64> = points.iter().map(|&(_, y)| y).collect();
    let trend = mann_kendall(&values);
    let slope = theil_sen(&points).unwrap_or(0.0);
    let half = n / 2;
    let recent = theil_sen(&points[n - half..]).unwrap_or(0.0);
    let span = match (points.first(), points.last()) {
        (Some(first), Some(last)) => last.0 - first.0,
        _ => 0.0,
    };
    let rise = slope * span;
    let noise = robust_noise(&points, slope);
    let earlier_peak = values[..half]
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    let last = values.last().copied().unwrap_or(f64::NEG_INFINITY);

    let failed = if n < rule.min_samples.max(2) {
        Some(Criterion::TooFewSamples)
    } else if slope <= 0.0 {
        Some(Criterion::NotGrowing)
    } else if trend.z < rule.min_z {
        Some(Criterion::NoSignificantTrend)
    } else if recent <= 0.0 || recent < rule.min_recent_fraction * slope {
        Some(Criterion::NotGrowingAtEnd)
    } else if last <= earlier_peak {
        Some(Criterion::BelowEarlierPeak)
    } else if rise < rule.min_signal_to_noise * noise {
        Some(Criterion::BelowNoise)
    } else {
        None
    };

    Assessment {
        leaking: failed.is_none(),
        slope_per_second: slope,
        recent_slope_per_second: recent,
        trend,
        rise,
        noise,
        samples: n,
        failed,
    }
}

/// 1.4826 × the median absolute residual of `points` around the line of slope `slope` through
/// the median intercept; 0 for no points.
fn robust_noise(points: &[(f64, f64)], slope: f64) -> f64 {
    let mut intercepts: Vec<f64> = points.iter().map(|&(x, y)| y - slope * x).collect();
    let Some(intercept) = median(&mut intercepts) else {
        return 0.0;
    };
    let mut residuals: Vec<f64> = points
        .iter()
        .map(|&(x, y)| (y - (intercept + slope * x)).abs())
        .collect();
    median(&mut residuals).map_or(0.0, |m| MAD_TO_SIGMA * m)
}

/// The median of `values` (the mean of the middle two for an even count), reordering them.
fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

/// Thresholds of the turnover rule (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnoverRule {
    /// Smallest fraction of a stack's rise that the releases matched to it must cover for it to
    /// be turnover. Default 0.5: a cache turning over is offset about fully (the usable size of
    /// a freed block is at least what was requested for it), while a stack that grows more
    /// than twice as fast as what it releases is accumulating.
    pub min_cover: f64,
    /// Smallest mean freed block, as a fraction of the stack's mean block, for a match by
    /// size. Default 0.9.
    pub min_block_ratio: f64,
    /// Largest mean freed block, as a multiple of the stack's mean block (plus 32 bytes of
    /// allocator rounding), for a match by size. Default 1.25.
    pub max_block_ratio: f64,
}

impl Default for TurnoverRule {
    fn default() -> Self {
        TurnoverRule {
            min_cover: 0.5,
            min_block_ratio: 0.9,
            max_block_ratio: 1.25,
        }
    }
}

/// Bytes of allocator rounding allowed between a requested block and its usable size.
const ROUNDING_BYTES: f64 = 32.0;

/// A stack the leak rule finds leaking, as [`match_turnover`] sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Growth {
    /// Bytes it grew by over the window (fitted slope × span).
    pub rise: f64,
    /// Mean size of its outstanding blocks.
    pub block: f64,
}

/// The frees at one site, over the window, of memory allocated before it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Release {
    /// Frees.
    pub frees: f64,
    /// Their bytes; `None` when the allocator does not tell them.
    pub bytes: Option<f64>,
}

impl Release {
    /// Bytes per free, for a stack of blocks of `block` bytes when the allocator does not say.
    fn per_free(&self, block: f64) -> f64 {
        match self.bytes {
            Some(bytes) if self.frees > 0.0 => bytes / self.frees,
            _ => block,
        }
    }
}

/// What [`match_turnover`] found for one growing stack.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Matched {
    /// Released bytes matched to the stack (estimated for sites counted without bytes).
    pub released: f64,
    /// The sites they came from (indices into the releases), in the order they were matched.
    pub sites: Vec<usize>,
    /// Whether they cover `min_cover` of the stack's rise: turnover, not a leak.
    pub turnover: bool,
}

/// Sets the `releases` of memory allocated before the window against the `growths` of leaking
/// stacks; `same_code` lists the (growth, release) pairs whose site is in a function of the
/// stack. One [`Matched`] per growth, in order. See the module documentation for the rule.
pub fn match_turnover(
    growths: &[Growth],
    releases: &[Release],
    same_code: &[(usize, usize)],
    rule: &TurnoverRule,
) -> Vec<Matched> {
    let mut matched = vec![Matched::default(); growths.len()];
    let mut frees_left: Vec<f64> = releases.iter().map(|r| r.frees.max(0.0)).collect();
    let sized = |g: usize, r: usize| {
        let (growth, release) = (&growths[g], &releases[r]);
        let Some(bytes) = release.bytes.filter(|_| release.frees > 0.0) else {
            return false;
        };
        let freed = bytes / release.frees;
        freed >= rule.min_block_ratio * growth.block
            && freed <= rule.max_block_ratio * growth.block + ROUNDING_BYTES
    };
    let by_size: Vec<(usize, usize)> = (0..growths.len())
        .flat_map(|g| (0..releases.len()).map(move |r| (g, r)))
        .filter(|pair| !same_code.contains(pair) && sized(pair.0, pair.1))
        .collect();
    for pass in [same_code.to_vec(), by_size] {
        let mut pairs: Vec<(f64, usize, usize)> = pass
            .into_iter()
            .filter(|&(g, r)| g < growths.len() && r < releases.len())
            .map(|(g, r)| {
                let rise = growths[g].rise.max(0.0);
                let offer = frees_left[r] * releases[r].per_free(growths[g].block);
                let disagreement = (rise - offer).abs() / rise.max(offer).max(f64::MIN_POSITIVE);
                (disagreement, g, r)
            })
            .collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        for (_, g, r) in pairs {
            let need = growths[g].rise - matched[g].released;
            let per_free = releases[r].per_free(growths[g].block);
            if need <= 0.0 || frees_left[r] <= 0.0 || per_free <= 0.0 {
                continue;
            }
            let taken = need.min(frees_left[r] * per_free);
            frees_left[r] -= taken / per_free;
            matched[g].released += taken;
            if !matched[g].sites.contains(&r) {
                matched[g].sites.push(r);
            }
        }
    }
    for (growth, found) in growths.iter().zip(&mut matched) {
        found.turnover = growth.rise > 0.0 && found.released >= rule.min_cover * growth.rise;
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    /// `n` samples one `interval` apart, value `f(i)`.
    fn series(n: usize, interval: f64, mut f: impl FnMut(usize) -> f64) -> Vec<(f64, f64)> {
        (0..n).map(|i| (i as f64 * interval, f(i))).collect()
    }

    fn judge(points: &[(f64, f64)]) -> Assessment {
        assess(points, &LeakRule::default())
    }

    #[test]
    fn theil_sen_hand_computed() {
        // Slopes: (0,1)-(1,3)=2, (0,1)-(2,2)=0.5, (0,1)-(3,10)=3, (1,3)-(2,2)=-1,
        // (1,3)-(3,10)=3.5, (2,2)-(3,10)=8; sorted -1, 0.5, 2, 3, 3.5, 8; median 2.5.
        let points = [(0.0, 1.0), (1.0, 3.0), (2.0, 2.0), (3.0, 10.0)];
        assert_eq!(theil_sen(&points), Some(2.5));
        // Odd count of slopes: (0,0)-(1,1)=1, (0,0)-(2,4)=2, (1,1)-(2,4)=3; median 2.
        assert_eq!(theil_sen(&[(0.0, 0.0), (1.0, 1.0), (2.0, 4.0)]), Some(2.0));
        // Pairs with equal x are skipped: only (1,5)-(3,1) = -2 and (1,7)-(3,1) = -3 remain.
        assert_eq!(theil_sen(&[(1.0, 5.0), (1.0, 7.0), (3.0, 1.0)]), Some(-2.5));
        // An outlier does not move it.
        let line: Vec<(f64, f64)> = (0..9)
            .map(|i| (i as f64, if i == 4 { 1e9 } else { 3.0 * i as f64 + 1.0 }))
            .collect();
        assert_eq!(theil_sen(&line), Some(3.0));
    }

    #[test]
    fn thinned_theil_sen_keeps_the_slope_of_a_line() {
        let line: Vec<(f64, f64)> = (0..1000).map(|i| (i as f64, 5.0 * i as f64)).collect();
        assert_eq!(theil_sen_thinned(&line, 48), Some(5.0));
        assert_eq!(theil_sen_thinned(&line[..3], 48), Some(5.0));
        assert_eq!(theil_sen_thinned(&line[..1], 48), None);
    }

    #[test]
    fn theil_sen_needs_two_distinct_times() {
        assert_eq!(theil_sen(&[]), None);
        assert_eq!(theil_sen(&[(1.0, 2.0)]), None);
        assert_eq!(theil_sen(&[(1.0, 2.0), (1.0, 5.0)]), None);
        assert_eq!(theil_sen(&[(1.0, 2.0), (f64::NAN, 5.0)]), None);
    }

    #[test]
    fn mann_kendall_hand_computed_without_ties() {
        // 1, 3, 2, 5: pairs +,+,+ / -,+ / + → S = 5 - 1 = 4.
        // Var = 4·3·13/18 = 26/3; z = (4 - 1)/√(26/3).
        let mk = mann_kendall(&[1.0, 3.0, 2.0, 5.0]);
        assert_eq!(mk.s, 4);
        assert!((mk.variance - 26.0 / 3.0).abs() < 1e-12);
        assert!((mk.z - 3.0 / (26.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn mann_kendall_hand_computed_with_ties() {
        // 1, 2, 2, 3, 1: S = (+1 +1 +1 0) + (0 +1 -1) + (+1 -1) + (-1) = 2.
        // Ties: value 1 twice, value 2 twice → Σ t(t-1)(2t+5) = 2·18 = 36.
        // Var = (5·4·15 - 36)/18 = 264/18; z = (2 - 1)/√(264/18).
        let mk = mann_kendall(&[1.0, 2.0, 2.0, 3.0, 1.0]);
        assert_eq!(mk.s, 2);
        assert!((mk.variance - 264.0 / 18.0).abs() < 1e-12);
        assert!((mk.z - 1.0 / (264.0f64 / 18.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn mann_kendall_downward_and_degenerate() {
        // Strictly decreasing 4 values: S = -6, Var = 26/3, z = (-6 + 1)/√(26/3).
        let mk = mann_kendall(&[4.0, 3.0, 2.0, 1.0]);
        assert_eq!(mk.s, -6);
        assert!((mk.z + 5.0 / (26.0f64 / 3.0).sqrt()).abs() < 1e-12);
        // All tied: variance 0, z 0.
        let flat = mann_kendall(&[7.0; 10]);
        assert_eq!(flat.s, 0);
        assert_eq!(flat.variance, 0.0);
        assert_eq!(flat.z, 0.0);
        assert_eq!(mann_kendall(&[]).s, 0);
    }

    #[test]
    fn linear_leak_is_leaking() {
        let points = series(30, 2.0, |i| 1_000_000.0 + 4096.0 * i as f64);
        let a = judge(&points);
        assert!(a.leaking, "{a:?}");
        assert_eq!(a.failed, None);
        assert!((a.slope_per_second - 2048.0).abs() < 1e-9);
        assert!((a.recent_slope_per_second - 2048.0).abs() < 1e-9);
        assert_eq!(a.noise, 0.0);
    }

    #[test]
    fn noisy_linear_leak_is_leaking() {
        for seed in 0..200 {
            let mut rng = Rng(seed);
            // 1 KiB/s leak sampled every 5 s, noise σ = 4 KiB (just under one interval's growth).
            let points = series(40, 5.0, |i| {
                8_000_000.0 + 1024.0 * 5.0 * i as f64 + 4096.0 * rng.normal()
            });
            let a = judge(&points);
            assert!(a.leaking, "seed {seed}: {a:?}");
            assert!((a.slope_per_second - 1024.0).abs() < 200.0, "{a:?}");
        }
    }

    #[test]
    fn slow_stepwise_leak_is_leaking() {
        // 64 KiB more every 4 samples, with a little noise: a leak in batches.
        for seed in 0..100 {
            let mut rng = Rng(seed);
            let points = series(40, 1.0, |i| {
                (i / 4) as f64 * 65_536.0 + 2_000_000.0 + 1024.0 * rng.normal()
            });
            let a = judge(&points);
            assert!(a.leaking, "seed {seed}: {a:?}");
            assert!((a.slope_per_second - 16_384.0).abs() < 4096.0, "{a:?}");
        }
        // And exact steps of one page every 3 samples, without noise.
        let points = series(24, 10.0, |i| (i / 3) as f64 * 4096.0);
        assert!(judge(&points).leaking);
    }

    #[test]
    fn cache_that_plateaus_is_not_leaking() {
        for seed in 0..200 {
            let mut rng = Rng(seed);
            let points = series(40, 1.0, |i| {
                let fill = i.min(20) as f64 * 100_000.0;
                5_000_000.0 + fill + 2000.0 * rng.normal()
            });
            let a = judge(&points);
            assert!(!a.leaking, "seed {seed}: {a:?}");
            assert_eq!(
                a.failed,
                Some(Criterion::NotGrowingAtEnd),
                "seed {seed}: {a:?}"
            );
        }
        // A cache that fills quickly and then saturates exponentially.
        let points = series(60, 1.0, |i| 1e7 * (1.0 - (-(i as f64) / 8.0).exp()));
        let a = judge(&points);
        assert!(!a.leaking, "{a:?}");
        assert_eq!(a.failed, Some(Criterion::NotGrowingAtEnd));
    }

    /// A sawtooth: rises by `amplitude` over `period` samples, then drops back.
    fn sawtooth(
        n: usize,
        period: usize,
        phase: usize,
        amplitude: f64,
        rng: &mut Rng,
    ) -> Vec<(f64, f64)> {
        series(n, 1.0, |i| {
            let position = ((i + phase) % period) as f64 / period as f64;
            1_000_000.0 + amplitude * position + amplitude * 0.02 * rng.normal()
        })
    }

    #[test]
    fn sawtooth_is_not_leaking() {
        let mut checked = 0;
        for (n, period) in [
            (30, 10),
            (31, 10),
            (36, 12),
            (45, 15),
            (40, 8),
            (60, 12),
            (30, 6),
        ] {
            for phase in 0..period {
                for seed in 0..20 {
                    let mut rng = Rng(seed * 1000 + phase as u64);
                    let points = sawtooth(n, period, phase, 500_000.0, &mut rng);
                    let a = judge(&points);
                    assert!(
                        !a.leaking,
                        "n {n} period {period} phase {phase} seed {seed}: {a:?}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 20 * (10 + 10 + 12 + 15 + 8 + 12 + 6));
    }

    #[test]
    fn pure_noise_has_no_false_positives() {
        let mut false_positives = Vec::new();
        for seed in 0..2000u64 {
            let n = 24 + (seed % 97) as usize;
            let mut rng = Rng(seed);
            let gaussian = series(n, 1.0, |_| 50_000_000.0 + 100_000.0 * rng.normal());
            // Laplace noise: heavier tails than the normal.
            let laplace = series(n, 1.0, |_| {
                let u = rng.uniform() - 0.5;
                50_000_000.0 - 100_000.0 * u.signum() * (1.0 - 2.0 * u.abs()).ln()
            });
            for (kind, points) in [("gaussian", gaussian), ("laplace", laplace)] {
                if judge(&points).leaking {
                    false_positives.push((kind, seed, n));
                }
            }
        }
        assert!(false_positives.is_empty(), "{false_positives:?}");
    }

    #[test]
    fn constant_series_is_not_leaking() {
        let a = judge(&series(30, 1.0, |_| 123_456.0));
        assert!(!a.leaking);
        assert_eq!(a.failed, Some(Criterion::NotGrowing));
        assert_eq!(a.slope_per_second, 0.0);
        assert_eq!(a.trend.s, 0);
    }

    #[test]
    fn single_step_is_not_leaking() {
        for n in [12, 20, 31, 60] {
            for step_at in [n / 5, n / 3, n / 2, 2 * n / 3] {
                let clean = series(n, 1.0, |i| if i < step_at { 1e6 } else { 2e6 });
                let a = judge(&clean);
                assert!(!a.leaking, "n {n} step at {step_at}: {a:?}");
                // With noise on the trailing plateau, a step early in a short window is
                // sometimes taken for a leak (about 1% for a step at a fifth of 20 samples).
                let early = step_at * 5 <= n || (step_at * 3 <= n && n < 30);
                if early {
                    continue;
                }
                for seed in 0..100 {
                    let mut rng = Rng(seed);
                    let noisy = series(n, 1.0, |i| {
                        (if i < step_at { 1e6 } else { 2e6 }) + 10_000.0 * rng.normal()
                    });
                    let a = judge(&noisy);
                    assert!(!a.leaking, "n {n} step at {step_at} seed {seed}: {a:?}");
                }
            }
        }
    }

    #[test]
    fn leak_then_restart_is_not_leaking() {
        // Grows for 60% of the window, drops to zero, grows again at the same rate.
        let points = series(40, 1.0, |i| {
            if i < 24 {
                10_000.0 * i as f64
            } else {
                10_000.0 * (i - 24) as f64
            }
        });
        let a = judge(&points);
        assert!(!a.leaking, "{a:?}");
        // The drop right at the middle is caught by the earlier peak.
        let points = series(40, 1.0, |i| 10_000.0 * (i % 20) as f64);
        let a = judge(&points);
        assert!(!a.leaking, "{a:?}");
        assert_eq!(a.failed, Some(Criterion::BelowEarlierPeak));
        // A restart early in the window followed by growth past the old peak is a leak.
        let points = series(40, 1.0, |i| {
            if i < 5 {
                10_000.0 * (i + 10) as f64
            } else {
                10_000.0 * (i - 5) as f64
            }
        });
        assert!(judge(&points).leaking);
    }

    #[test]
    fn too_few_samples_is_not_leaking() {
        let points = series(5, 1.0, |i| 1000.0 * i as f64);
        let a = judge(&points);
        assert!(!a.leaking);
        assert_eq!(a.failed, Some(Criterion::TooFewSamples));
        assert_eq!(a.samples, 5);
        assert!(judge(&series(6, 1.0, |i| 1000.0 * i as f64)).leaking);
        let empty = judge(&[]);
        assert!(!empty.leaking);
        assert_eq!(empty.failed, Some(Criterion::TooFewSamples));
        // Non-finite points do not count.
        let mut points = series(6, 1.0, |i| 1000.0 * i as f64);
        points[2].1 = f64::NAN;
        assert_eq!(judge(&points).failed, Some(Criterion::TooFewSamples));
    }

    #[test]
    fn unsorted_points_are_sorted_by_time() {
        let mut points = series(12, 1.0, |i| 100.0 * i as f64);
        points.reverse();
        let a = judge(&points);
        assert!(a.leaking, "{a:?}");
        assert_eq!(a.slope_per_second, 100.0);
    }

    fn release(frees: f64, bytes: Option<f64>) -> Release {
        Release { frees, bytes }
    }

    fn turnover(growths: &[Growth], releases: &[Release], same: &[(usize, usize)]) -> Vec<Matched> {
        match_turnover(growths, releases, same, &TurnoverRule::default())
    }

    #[test]
    fn a_cache_turning_over_is_offset_by_its_own_site() {
        // 4 KiB entries, 500 replaced over the window: the site frees 4104-byte chunks.
        let cache = Growth {
            rise: 500.0 * 4096.0,
            block: 4096.0,
        };
        let site = release(500.0, Some(500.0 * 4104.0));
        let found = turnover(&[cache], &[site], &[(0, 0)]);
        assert!(found[0].turnover, "{found:?}");
        assert_eq!(found[0].sites, [0]);
        assert_eq!(found[0].released, cache.rise);
        // The same by size alone, without a shared function.
        assert!(turnover(&[cache], &[site], &[])[0].turnover);
        // Half the entries replaced, while the stack grew by all of them: still covered.
        let half = release(250.0, Some(250.0 * 4104.0));
        assert!(turnover(&[cache], &[half], &[(0, 0)])[0].turnover);
        // A third: the stack accumulates.
        let third = release(166.0, Some(166.0 * 4104.0));
        let found = turnover(&[cache], &[third], &[(0, 0)]);
        assert!(!found[0].turnover, "{found:?}");
        assert!((found[0].released - 166.0 * 4104.0).abs() < 1e-6);
    }

    #[test]
    fn a_leak_beside_a_turning_cache_stays_leaking() {
        let cache = Growth {
            rise: 2_000_000.0,
            block: 4096.0,
        };
        // Leaks of the same block size, growing slower and faster than the cache turns over.
        for leak_rise in [600_000.0, 2_400_000.0, 9_000_000.0] {
            let leak = Growth {
                rise: leak_rise,
                block: 4096.0,
            };
            let site = release(2_000_000.0 / 4104.0, Some(2_000_000.0));
            // The site is in the cache's function: matched there first.
            let found = turnover(&[leak, cache], &[site], &[(1, 0)]);
            assert!(!found[0].turnover && found[1].turnover, "{found:?}");
            assert_eq!(found[0].released, 0.0);
            // By size alone, the pair whose amounts agree wins: the cache.
            let found = turnover(&[leak, cache], &[site], &[]);
            assert!(
                !found[0].turnover && found[1].turnover,
                "{leak_rise}: {found:?}"
            );
        }
        // A leak of another block size never matches by size.
        let small = Growth {
            rise: 2_000_000.0,
            block: 256.0,
        };
        let site = release(2_000_000.0 / 4104.0, Some(2_000_000.0));
        let found = turnover(&[small], &[site], &[]);
        assert!(!found[0].turnover && found[0].sites.is_empty(), "{found:?}");
    }

    #[test]
    fn each_released_byte_is_spent_once() {
        let a = Growth {
            rise: 1_000_000.0,
            block: 1000.0,
        };
        let site = release(1000.0, Some(1_000_000.0));
        let found = turnover(&[a, a], &[site], &[(0, 0), (1, 0)]);
        assert_eq!(found.iter().filter(|m| m.turnover).count(), 1, "{found:?}");
        let spent: f64 = found.iter().map(|m| m.released).sum();
        assert!((spent - 1_000_000.0).abs() < 1e-6);
        // Two sites together cover one stack.
        let halves = [
            release(300.0, Some(300_000.0)),
            release(300.0, Some(300_000.0)),
        ];
        let found = turnover(&[a], &halves, &[(0, 0)]);
        assert!(found[0].turnover, "{found:?}");
        assert_eq!(found[0].sites, [0, 1]);
        assert!((found[0].released - 600_000.0).abs() < 1e-6);
    }

    #[test]
    fn sites_without_bytes_match_only_in_their_function() {
        let cache = Growth {
            rise: 409_600.0,
            block: 4096.0,
        };
        let counted = release(100.0, None);
        let found = turnover(&[cache], &[counted], &[(0, 0)]);
        assert!(found[0].turnover, "{found:?}");
        assert_eq!(found[0].released, 409_600.0);
        let found = turnover(&[cache], &[counted], &[]);
        assert!(!found[0].turnover && found[0].released == 0.0, "{found:?}");
        // Nothing released, nothing growing, out-of-range pairs: no turnover.
        assert!(!turnover(&[cache], &[], &[(0, 3)])[0].turnover);
        let flat = Growth {
            rise: 0.0,
            block: 64.0,
        };
        assert!(!turnover(&[flat], &[release(5.0, Some(320.0))], &[(0, 0)])[0].turnover);
    }
}
