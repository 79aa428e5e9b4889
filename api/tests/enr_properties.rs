//! Properties of the ENR economics over random inputs.

use proptest::prelude::*;
use univrs_api::enr::{entropy, nexus, pricing, reputation, revival, septal};
use univrs_api::resources::node::{NexusRole, SeptalState};

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1e12f64..1e12,
        0.0f64..1.0,
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(0.0),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn entropy_components_are_capped_and_the_multiplier_is_bounded_and_monotone(
        a in any_f64(), b in any_f64(), c in any_f64(), d in any_f64(), s1 in 0.0f64..20.0, s2 in 0.0f64..20.0,
    ) {
        let n = entropy::NetworkInputs { unreachable: a, relayed: b, latency_ms: c };
        let cpu = entropy::ComputeInputs { utilization: d, unsettled: c, restart_rate: b };
        let l = entropy::LedgerInputs { line_utilization: a };
        let t = entropy::TemporalInputs { lapses: d, clock_skew_s: c };
        for x in [entropy::network(&n), entropy::compute(&cpu), entropy::ledger(&l), entropy::temporal(&t)] {
            prop_assert!((0.0..=entropy::MAX_COMPONENT).contains(&x));
        }
        let e = entropy::Entropy { network: a, compute: b, ledger: c, temporal: d };
        let total = e.total(&entropy::Weights::default());
        prop_assert!((0.0..=10.0).contains(&total));
        let m = entropy::price_multiplier(total);
        prop_assert!((1.0..=5.0).contains(&m));
        let (lo, hi) = if s1 <= s2 { (s1, s2) } else { (s2, s1) };
        prop_assert!(entropy::price_multiplier(lo) <= entropy::price_multiplier(hi) + 1e-12);
    }

    #[test]
    fn election_is_deterministic_and_permutation_invariant(
        cands in proptest::collection::vec((0.0f64..1.0, 0u64..200_000_000, 0.0f64..1.0, 0.0f64..1.0, any::<bool>()), 0..40),
        seed in any::<u64>(),
    ) {
        let cs: Vec<nexus::Candidate> = cands.iter().enumerate().map(|(i, (u, bw, r, c, ready))| nexus::Candidate {
            name: format!("n{i}"), uptime: *u, bandwidth_bps: *bw, reputation: *r, connectivity: *c, ready: *ready,
        }).collect();
        let cfg = nexus::Config::default();
        let e = nexus::elect(&cs, &cfg);
        let mut shuffled = cs.clone();
        let len = shuffled.len();
        if len > 1 {
            for i in 0..len {
                let j = (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) % len as u64) as usize;
                shuffled.swap(i, j);
            }
        }
        prop_assert_eq!(&nexus::elect(&shuffled, &cfg), &e);
        prop_assert_eq!(e.roles.len(), cs.len(), "every candidate gets a role");
        for h in &e.hubs {
            prop_assert!(e.roles[h] != NexusRole::Leaf);
            let c = cs.iter().find(|c| &c.name == h).unwrap();
            prop_assert!(c.ready, "only Ready nodes are hubs");
            if !e.fallback { prop_assert!(nexus::eligible(c, &cfg)); }
        }
        if cs.iter().any(|c| c.ready) { prop_assert!(!e.hubs.is_empty(), "a Ready node means a hub"); }
    }

    #[test]
    fn revival_conserves_credit_exactly(
        amount in prop_oneof![0i64..1_000_000, Just(i64::MAX), -1000i64..0],
        nodes in proptest::collection::vec((any::<bool>(), 0.0f64..1.0, any::<u64>(), any::<bool>(), any::<i64>(), 0.0f64..1.0), 0..30),
    ) {
        let infos: Vec<revival::NodeInfo> = nodes.iter().enumerate().map(|(i, (nexus, up, age, healthy, bal, rep))| revival::NodeInfo {
            name: format!("n{}", i % 20), nexus: *nexus, uptime: *up, age_ms: *age, healthy: *healthy, balance: *bal, reputation: *rep,
        }).collect();
        let plan = revival::plan(amount, &infos, &revival::Config::default());
        let total: i128 = plan.iter().map(|(_, a)| i128::from(*a)).sum();
        prop_assert_eq!(total, i128::from(amount.max(0)));
        prop_assert!(plan.iter().all(|(_, a)| *a >= 0));
        let tax = revival::tax(amount, 200);
        prop_assert!(tax >= 0 && tax <= amount.max(0));
    }

    #[test]
    fn septal_never_reconnects_without_recovering(
        events in proptest::collection::vec((0u8..4, 0u64..120_000, 0u64..100_000, 0i64..300_000, 0.0f64..1.0), 1..100),
    ) {
        let cfg = septal::Config::default();
        let mut g = septal::Gate::default();
        let mut now = 0u64;
        for (kind, dt, silent, defaulted, rep) in events {
            now += dt;
            let ev = match kind {
                0 => septal::Event::Success,
                1 => septal::Event::Failure,
                2 => septal::Event::Tick,
                _ => septal::Event::Health(septal::HealthInputs { silent_ms: silent, defaulted, reputation: rep }),
            };
            let next = septal::step(g, ev, now, &cfg);
            if g.state == SeptalState::Isolated {
                prop_assert!(next.state != SeptalState::Connected, "isolated gates reconnect only through Recovering");
            }
            if next.state == SeptalState::Recovering && g.state == SeptalState::Isolated {
                prop_assert!(now - g.since_ms >= cfg.recovery_timeout_ms);
            }
            prop_assert!((0.0..=1.0).contains(&next.traffic));
            g = next;
        }
    }

    #[test]
    fn the_auction_pays_the_lowest_valid_ask_at_least_its_ask_and_at_most_the_ceiling(
        asks in proptest::collection::vec((0u8..10, -100i64..10_000, -10i64..5000, any::<i8>()), 0..20),
        max in proptest::option::of(0i64..10_000),
    ) {
        let asks: Vec<pricing::Ask> = asks.iter().map(|(n, a, r, s)| pricing::Ask {
            node: format!("n{n}"), amount: *a, reserve: *r, score: i64::from(*s),
        }).collect();
        let valid = |a: &pricing::Ask| a.amount >= a.reserve.max(0) && max.is_none_or(|m| a.amount <= m);
        match pricing::procure(&asks, max) {
            Ok(award) => {
                let low = asks.iter().filter(|a| valid(a)).map(|a| a.amount).min().unwrap();
                prop_assert!(asks.iter().any(|a| valid(a) && a.node == award.winner && a.amount == low));
                prop_assert!(award.price >= low);
                prop_assert!(max.is_none_or(|m| award.price <= m));
            }
            Err(_) => prop_assert!(!asks.iter().any(valid)),
        }
    }

    #[test]
    fn prices_never_panic_and_dynamic_stays_within_five_times_fixed(
        cpu in any::<u64>(), mem in any::<u64>(), gpus in any::<u32>(), dur in any::<u64>(),
        util in any_f64(), ent in any_f64(),
    ) {
        let usage = pricing::Usage { cpu_millis: cpu % 1_000_000, memory_bytes: mem % (1 << 40), gpus: gpus % 16, duration_ms: dur % (1 << 36) };
        let rates = univrs_api::resources::node::NodePricing { model: univrs_api::resources::node::PricingModel::Dynamic, cpu_core_hour: 1000, memory_gib_hour: 250, gpu_hour: 10_000 };
        let base = pricing::fixed(&usage, &rates).unwrap();
        let market = pricing::Market { utilization: util, entropy_multiplier: ent };
        let q = pricing::quote(&usage, &rates, &market).unwrap();
        prop_assert!(q >= base && q <= base.saturating_mul(5));
        let _ = pricing::fixed(&pricing::Usage { cpu_millis: cpu, memory_bytes: mem, gpus, duration_ms: dur }, &rates);
    }

    #[test]
    fn reputation_stays_in_range(
        outcomes in proptest::collection::vec((any_f64(), 0u64..1_000_000_000), 0..50),
        vouches in proptest::collection::vec((any_f64(), any_f64()), 0..20),
    ) {
        let cfg = reputation::Config::default();
        let mut r = reputation::Record::new(0, &cfg);
        let mut now = 0;
        for (o, dt) in outcomes {
            now += dt;
            r = reputation::observe(r, o, now, &cfg);
            prop_assert!((0.0..=1.0).contains(&r.base));
        }
        let contributions: Vec<f64> = vouches.iter().map(|(w, v)| reputation::vouch_contribution(*w, *v, &cfg)).collect();
        let boost = reputation::vouch_boost(&contributions, &cfg);
        prop_assert!((0.0..=cfg.max_vouch_boost).contains(&boost));
        prop_assert!((0.0..=1.0).contains(&reputation::effective(r.base, boost)));
    }

    #[test]
    fn a_ring_of_fresh_identities_cannot_vouch_itself_up(n in 2usize..30, rounds in 1usize..200, weight in 0.0f64..=1.0) {
        let cfg = reputation::Config::default();
        // Everyone starts at the prior; each round every member vouches for every other with
        // `weight`, and the boost is recomputed from the previous round's service records.
        let bases = vec![cfg.prior; n];
        let mut effective = vec![cfg.prior; n];
        for _ in 0..rounds {
            effective = (0..n).map(|i| {
                let c: Vec<f64> = (0..n).filter(|j| *j != i).map(|j| reputation::vouch_contribution(weight, bases[j], &cfg)).collect();
                reputation::effective(bases[i], reputation::vouch_boost(&c, &cfg))
            }).collect();
        }
        prop_assert!(effective.iter().all(|e| *e <= cfg.prior + 1e-12), "{:?}", effective);
    }
}
