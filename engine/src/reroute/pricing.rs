//! Pricing: per order, its cheapest candidate at the prices of the moment, and what those
//! candidates use of each resource. The solver runs it once an iteration, a few hundred times,
//! over every candidate left after presolve: its inner loop.
//!
//! On the 1M-order `peak` re-route 8.4M candidates and 22M uses are left, 310 MB as the
//! solver keeps them (16 bytes a candidate, 8 a use), read whole every iteration. When the
//! problem allows, pricing reads a packed copy instead, 135 MB: the costs as `f32` when every
//! cost is one exactly, a candidate's uses found by running along its order's instead of by an
//! offset, and a use as two `u16` (resources are a few thousand, amounts a few units). Each
//! order's candidates are kept cheapest first, so its search can stop early (`cheapest`); there
//! it still reads 6.6-7.4M of the 8.4M candidates once prices have risen. Together these took
//! the 300 iterations from 19.3 to 18.0-18.8 s on 2 cores: the loop is bound by its arithmetic
//! and branches more than by memory. Each priced cost is the same `f64` sum, added in the same
//! order, as from the full instance: the plan, the bound and the gap do not change.

use rayon::prelude::*;

use super::solver::Instance;

/// Orders a pricing task works through.
const PRICE_CHUNK: usize = 16_384;
/// Up to this many resources, each pricing task also sums its orders' loads (a vector of its
/// own), so the subgradient needs no second pass over the orders.
const FUSED_RESOURCES_MAX: usize = 1 << 16;

/// Per order: its cheapest candidate (`u32::MAX`: none), that one's priced cost, and the second
/// cheapest's (for the regret order).
pub(super) type Priced = (u32, f64, f64);

/// Prices the orders of one instance, from a packed copy when the instance fits one.
pub(super) struct Pricer<'a> {
    instance: &'a Instance,
    packed: Option<Packed>,
}

enum Packed {
    Narrow(Packing<f32>),
    Wide(Packing<f64>),
}

/// The candidates as pricing reads them: each order's cheapest first.
struct Packing<C> {
    /// Per order, its first candidate and its first use; then the ends.
    starts: Vec<(u32, u32)>,
    costs: Vec<C>,
    /// Per candidate, its index among its order's candidates in the instance.
    index: Vec<u32>,
    /// Per candidate, how many uses it has (they follow the order's earlier candidates').
    lens: Vec<u8>,
    uses: Vec<(u16, u16)>,
}

impl<'a> Pricer<'a> {
    pub(super) fn new(instance: &'a Instance) -> Self {
        let fits = instance.capacity.len() <= usize::from(u16::MAX) + 1
            && instance.uses.len() < u32::MAX as usize
            && instance.candidates.len() < u32::MAX as usize
            && instance.candidates.iter().all(|c| c.len <= u32::from(u8::MAX))
            && instance.uses.iter().all(|&(_, a)| a <= u32::from(u16::MAX));
        let packed = fits.then(|| {
            // NaN never equals itself: such an instance stays wide.
            if instance
                .candidates
                .iter()
                .all(|c| f64::from(c.cost as f32) == c.cost)
            {
                Packed::Narrow(Packing::new(instance, |c| c as f32))
            } else {
                Packed::Wide(Packing::new(instance, |c| c))
            }
        });
        Self { instance, packed }
    }

    /// Per order, its cheapest candidate at `prices` and the second cheapest's priced cost, into
    /// `out`; into `used`, what those candidates use of each resource. Sums of integers: the
    /// same on any number of threads.
    pub(super) fn price(&self, prices: &[f64], out: &mut Vec<Priced>, used: &mut [u64]) {
        match &self.packed {
            Some(Packed::Narrow(p)) => p.price(prices, out, used),
            Some(Packed::Wide(p)) => p.price(prices, out, used),
            None => price_instance(self.instance, prices, out, used),
        }
    }
}

impl<C: Copy + Into<f64> + Send + Sync> Packing<C> {
    fn new(instance: &Instance, cost: impl Fn(f64) -> C) -> Self {
        let n = instance.n_orders();
        let mut starts = Vec::with_capacity(n + 1);
        let mut costs = Vec::with_capacity(instance.candidates.len());
        let mut index = Vec::with_capacity(instance.candidates.len());
        let mut lens = Vec::with_capacity(instance.candidates.len());
        let mut uses = Vec::with_capacity(instance.uses.len());
        let mut sorted = Vec::new();
        for j in 0..n {
            starts.push((costs.len() as u32, uses.len() as u32));
            let candidates = instance.candidates_of(j);
            sorted.clear();
            sorted.extend(0..candidates.len() as u32);
            // Stable: among equal costs, the instance's order.
            sorted.sort_by(|&a, &b| {
                candidates[a as usize]
                    .cost
                    .total_cmp(&candidates[b as usize].cost)
            });
            for &i in &sorted {
                let c = &candidates[i as usize];
                costs.push(cost(c.cost));
                index.push(i);
                lens.push(c.len as u8);
                uses.extend(instance.uses_of(c).iter().map(|&(r, a)| (r as u16, a as u16)));
            }
        }
        starts.push((costs.len() as u32, uses.len() as u32));
        Self {
            starts,
            costs,
            index,
            lens,
            uses,
        }
    }

    /// Order `j`'s best two at `prices`, and where the best one's uses are. The best is the
    /// first in the instance's order among the cheapest, as `price_instance` finds it.
    ///
    /// With no price below zero a candidate costs at least its own cost at any prices (and
    /// rounding keeps that: a sum of non-negative terms added to the cost rounds to no less
    /// than the cost). So once a candidate's own cost is above the second best priced, neither
    /// it nor any dearer one after it changes the best two: the order's search stops there.
    /// On the 1M-order `peak` re-route that skips most candidates.
    fn cheapest(&self, j: usize, prices: &[f64], cut: bool) -> (Priced, std::ops::Range<usize>) {
        let (first, at) = self.starts[j];
        let last = self.starts[j + 1].0;
        let mut at = at as usize;
        let mut best = (u32::MAX, f64::INFINITY, f64::INFINITY);
        let mut best_uses = 0..0;
        for k in first as usize..last as usize {
            let cost: f64 = self.costs[k].into();
            if cut && cost > best.2 {
                break;
            }
            let end = at + usize::from(self.lens[k]);
            let uses = &self.uses[at..end];
            // As `Instance::priced` adds: the uses' sum, then the cost.
            let priced = cost
                + uses
                    .iter()
                    .map(|&(r, a)| prices[usize::from(r)] * f64::from(a))
                    .sum::<f64>();
            let i = self.index[k];
            if priced < best.1 || (priced == best.1 && best.0 != u32::MAX && i < best.0) {
                best = (i, priced, best.1);
                best_uses = at..end;
            } else if priced < best.2 {
                best.2 = priced;
            }
            at = end;
        }
        (best, best_uses)
    }

    fn price(&self, prices: &[f64], out: &mut Vec<Priced>, used: &mut [u64]) {
        out.resize(self.starts.len() - 1, (u32::MAX, 0.0, 0.0));
        // NaN is not `>= 0`: such prices are searched whole.
        let cut = prices.iter().all(|&p| p >= 0.0);
        price_fused(out, used, |j, local| {
            let (best, uses) = self.cheapest(j, prices, cut);
            for &(r, a) in &self.uses[uses] {
                local[usize::from(r)] += u64::from(a);
            }
            best
        });
    }
}

/// Prices every order with `price_one`, which also adds its pick's uses to the loads it is
/// given: one vector per task, summed at the end in task order.
fn price_fused(out: &mut [Priced], used: &mut [u64], price_one: impl Fn(usize, &mut [u64]) -> Priced + Sync) {
    let m = used.len();
    let loads: Vec<Vec<u64>> = out
        .par_chunks_mut(PRICE_CHUNK)
        .enumerate()
        .map(|(k, chunk)| {
            let mut local = vec![0u64; m];
            for (i, o) in chunk.iter_mut().enumerate() {
                *o = price_one(k * PRICE_CHUNK + i, &mut local);
            }
            local
        })
        .collect();
    used.fill(0);
    for local in loads {
        used.iter_mut().zip(local).for_each(|(u, l)| *u += l);
    }
}

/// `Pricer::price` from the instance itself.
fn price_instance(instance: &Instance, prices: &[f64], out: &mut Vec<Priced>, used: &mut [u64]) {
    let cheapest = |j: usize| {
        let mut best = (u32::MAX, f64::INFINITY, f64::INFINITY);
        for (i, c) in instance.candidates_of(j).iter().enumerate() {
            let priced = instance.priced(c, prices);
            if priced < best.1 {
                best = (i as u32, priced, best.1);
            } else if priced < best.2 {
                best.2 = priced;
            }
        }
        best
    };
    let add = |used: &mut [u64], j: usize, best: Priced| {
        if best.0 != u32::MAX {
            for &(r, a) in instance.uses_of(&instance.candidates_of(j)[best.0 as usize]) {
                used[r as usize] += u64::from(a);
            }
        }
    };
    out.resize(instance.n_orders(), (u32::MAX, 0.0, 0.0));
    let m = used.len();
    if m <= FUSED_RESOURCES_MAX {
        price_fused(out, used, |j, local| {
            let best = cheapest(j);
            add(local, j, best);
            best
        });
    } else {
        out.par_iter_mut()
            .with_min_len(512)
            .enumerate()
            .for_each(|(j, o)| *o = cheapest(j));
        used.fill(0);
        for (j, &o) in out.iter().enumerate() {
            add(used, j, o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Orders of 0-4 candidates, each a cost and up to 5 uses of `resources` resources.
    fn instance(
        resources: u32,
        amount_max: u32,
        cost: impl Strategy<Value = f64>,
    ) -> impl Strategy<Value = Instance> {
        let candidate = (cost, prop::collection::vec((0..resources, 1..=amount_max), 0..5));
        prop::collection::vec(prop::collection::vec(candidate, 0..4), 0..40).prop_flat_map(move |orders| {
            prop::collection::vec(0..20u64, resources as usize).prop_map(move |capacity| {
                let mut inst = Instance {
                    capacity,
                    ..Default::default()
                };
                for order in &orders {
                    inst.push_order(order.iter().map(|(c, u)| (*c, u.as_slice())));
                }
                inst
            })
        })
    }

    /// The packed copies price exactly as the instance does.
    fn same_as_the_instance(
        inst: &Instance,
        prices: &[f64],
        expect: Option<bool>,
    ) -> Result<(), TestCaseError> {
        let pricer = Pricer::new(inst);
        let narrow = match &pricer.packed {
            Some(Packed::Narrow(_)) => Some(true),
            Some(Packed::Wide(_)) => Some(false),
            None => None,
        };
        prop_assert_eq!(narrow, expect);
        let m = inst.capacity.len();
        let (mut out, mut used) = (Vec::new(), vec![7; m]);
        pricer.price(prices, &mut out, &mut used);
        let (mut want, mut want_used) = (Vec::new(), vec![0; m]);
        price_instance(inst, prices, &mut want, &mut want_used);
        prop_assert_eq!(out.len(), inst.n_orders());
        for (a, b) in out.iter().zip(&want) {
            prop_assert_eq!(a.0, b.0);
            prop_assert_eq!(a.1.to_bits(), b.1.to_bits());
            prop_assert_eq!(a.2.to_bits(), b.2.to_bits());
        }
        prop_assert_eq!(used, want_used);
        Ok(())
    }

    fn prices(m: usize) -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec(prop_oneof![Just(0.0), 0.0..100.0f64], m)
    }

    proptest! {
        #[test]
        fn integer_costs_price_from_the_narrow_copy(
            (inst, prices) in instance(6, 3, prop_oneof![8 => (0..1000u32).prop_map(f64::from), 1 => Just(f64::INFINITY)])
                .prop_flat_map(|i| { let m = i.capacity.len(); (Just(i), prices(m)) })
        ) {
            same_as_the_instance(&inst, &prices, Some(true))?;
        }

        #[test]
        fn fractional_costs_price_from_the_wide_copy(
            (inst, prices) in instance(6, 3, prop_oneof![
                8 => (1..1000u32).prop_map(|c| f64::from(c) + 0.1),
                1 => Just(f64::INFINITY),
                1 => Just(f64::NAN),
            ])
                .prop_filter("a cost no f32 is", |i| i.candidates.iter().any(|c| f64::from(c.cost as f32) != c.cost))
                .prop_flat_map(|i| { let m = i.capacity.len(); (Just(i), prices(m)) })
        ) {
            same_as_the_instance(&inst, &prices, Some(false))?;
        }

        #[test]
        fn large_amounts_price_from_the_instance(
            (inst, prices) in instance(6, 100_000, (0..1000u32).prop_map(f64::from))
                .prop_filter("an amount over u16", |i| i.uses.iter().any(|u| u.1 > u32::from(u16::MAX)))
                .prop_flat_map(|i| { let m = i.capacity.len(); (Just(i), prices(m)) })
        ) {
            same_as_the_instance(&inst, &prices, None)?;
        }
    }

    /// More resources than a `u16` names: the instance itself is priced.
    #[test]
    fn many_resources_price_from_the_instance() {
        let mut inst = Instance {
            capacity: vec![1; 70_000],
            ..Default::default()
        };
        inst.push_order([(1.0, &[(69_999u32, 1u32)][..]), (2.0, &[(3, 1)][..])]);
        let mut prices = vec![0.0; 70_000];
        prices[69_999] = 5.0;
        let pricer = Pricer::new(&inst);
        assert!(pricer.packed.is_none());
        let (mut out, mut used) = (Vec::new(), vec![0; 70_000]);
        pricer.price(&prices, &mut out, &mut used);
        assert_eq!(out, vec![(1, 2.0, 6.0)]);
        assert_eq!((used[3], used[69_999]), (1, 0));
    }
}
