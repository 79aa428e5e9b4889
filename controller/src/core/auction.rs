//! Auctions among Auction-priced nodes: when an auction opens for an instance, which asks
//! count at its close, and who wins at what price. No I/O (the keys are made here, kept by the
//! reconciler).
//!
//! The rules:
//! - **Opening.** When the node the scheduler would choose for an instance prices by
//!   `Auction`, the instance is put to auction among every eligible Auction-priced node that
//!   holds no more instances of the workload than that node (spreading still comes first), the
//!   256 best scored at most. The controller makes a key for the auction, keeps its secret half
//!   in memory and publishes the public half in the Workload's `status.auction.sealKey`, with
//!   `closesAt` = now + `--auction-window`. One instance of a Workload is at auction at a time;
//!   the others wait for it.
//! - **Bidding.** Each named node's agent writes its ask for an instance-hour, signed with the
//!   node's key and sealed to the auction's (`univrs_api::bid`), in its own Node's
//!   `status.bids`. No node can read another's ask. An honest agent asks its rates' price for an
//!   hour of the request ([`univrs_api::bid::reserve`]): in a second-price auction, asking what
//!   the work costs you is the best strategy.
//! - **Award at the close.** Every named node's bid is opened with the auction's key. A bid that
//!   does not open (sealed to another key, or for another bidder: a copy of someone else's), is
//!   not signed by the node whose status holds it, or names other terms is refused and counted
//!   (a `BidRefused` Warning, `univrs_auction_bids_refused_total`). Of the valid asks of nodes
//!   still eligible, those below the node's rates' price or above the Workload's
//!   `maxPricePerHour` do not count; the lowest wins (equal asks: the better score, then the
//!   name) and is paid the second-lowest valid ask, or its own when alone, never above
//!   `maxPricePerHour` (`univrs_api::enr::pricing::procure`). The instance's
//!   `awardedPricePerHour` records that clearing price, and its usage is billed at the node's
//!   rates scaled by clearing ÷ the rates' price for the request-hour.
//! - **No valid bid** by the close: the instance is placed as usual, at the node's rates. An
//!   auction whose key the controller no longer holds (it restarted, or leadership moved) is
//!   void and opened again.

use crate::core::scheduler::{NodeView, Standing};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use univrs_api::Node;
use univrs_api::bid::Terms;
use univrs_api::enr::pricing::{self, Ask};
use univrs_api::identity::{NodeIdentity, PublicIdentity};
use univrs_api::resources::node::PricingModel;
use univrs_api::resources::workload::Auction;

/// The most nodes asked to bid in one auction (the schema's bound on `status.auction.nodes`).
pub const MAX_BIDDERS: usize = 256;

/// How long a key of an auction nobody closed is kept (its Workload was deleted meanwhile).
const KEY_LIFETIME: Duration = Duration::from_secs(600);

/// When an auction opened at `now` for `window` closes: rounded up to the second, since
/// `status.auction.closesAt` is stored to the second, so every bidder has the whole window.
pub fn close_after(
    now: k8s_openapi::jiff::Timestamp,
    window: k8s_openapi::jiff::SignedDuration,
) -> k8s_openapi::jiff::Timestamp {
    let end = now.saturating_add(window).unwrap_or(now);
    let whole = end.as_second() + i64::from(end.subsec_nanosecond() > 0);
    k8s_openapi::jiff::Timestamp::from_second(whole).unwrap_or(end)
}

/// The secret keys of the open auctions, by auction id.
#[derive(Default)]
pub struct Keys(HashMap<String, (NodeIdentity, Instant)>);

impl Keys {
    /// A new auction's id and the public half of its key, the secret half kept.
    pub fn open(&mut self, now: Instant) -> (String, PublicIdentity) {
        self.0
            .retain(|_, (_, opened)| now.duration_since(*opened) < KEY_LIFETIME);
        let key = NodeIdentity::generate();
        let public = key.public();
        // The key's first bytes name it: unique as long as keys are.
        let id = hex::encode(&public.to_bytes()[..8]);
        self.0.insert(id.clone(), (key, now));
        (id, public)
    }

    /// The secret key of auction `id`, if this controller opened it.
    pub fn get(&self, id: &str) -> Option<&NodeIdentity> {
        self.0.get(id).map(|(k, _)| k)
    }

    /// Forgets auction `id`'s key (it is over).
    pub fn close(&mut self, id: &str) {
        self.0.remove(id);
    }
}

/// A bid that was refused at the close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The node whose status held it.
    pub node: String,
    /// Why it was refused.
    pub why: String,
}

/// Where a Workload's auction stands for this reconcile.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum State {
    /// No auction.
    #[default]
    None,
    /// Taking bids until it closes.
    Open(Auction),
    /// Closed: the asks that opened, by node.
    Closed(Auction, BTreeMap<String, i64>),
    /// Opened by a controller that no longer holds its key: no bid can be opened.
    Void(Auction),
}

/// Where `auction` (the Workload `workload`'s, as `namespace/name`) stands at `now`, with its
/// bids opened when it has closed: each named node's bid for it is looked up with `node_of`.
pub fn state<N>(
    workload: &str,
    auction: Option<&Auction>,
    keys: &Keys,
    now: k8s_openapi::jiff::Timestamp,
    node_of: impl Fn(&str) -> Option<N>,
) -> (State, Vec<Refused>)
where
    N: std::ops::Deref<Target = Node>,
{
    let Some(a) = auction else {
        return (State::None, Vec::new());
    };
    let Some(key) = keys.get(&a.id) else {
        return (State::Void(a.clone()), Vec::new());
    };
    if now < a.closes_at.0 {
        return (State::Open(a.clone()), Vec::new());
    }
    let terms = Terms {
        auction: &a.id,
        workload,
        instance: &a.instance,
    };
    let mut asks = BTreeMap::new();
    let mut refused = Vec::new();
    for name in &a.nodes {
        let Some(node) = node_of(name) else {
            continue;
        };
        let bids = node.status.as_ref().map(|s| s.bids.as_slice());
        let Some(bid) = bids.unwrap_or_default().iter().find(|b| b.auction == a.id) else {
            continue;
        };
        let opened = if bid.workload != workload || bid.instance != a.instance {
            Err(format!(
                "it names {} {}, not this auction's {workload} {}",
                bid.workload, bid.instance, a.instance
            ))
        } else {
            PublicIdentity::from_peer_id(&node.spec.peer_id)
                .map_err(|e| format!("the node's peer id does not parse: {e}"))
                .and_then(|bidder| {
                    terms
                        .open(key, &bidder, &bid.sealed)
                        .map_err(|e| e.to_string())
                })
        };
        match opened {
            Ok(amount) => {
                asks.insert(name.clone(), amount);
            }
            Err(why) => refused.push(Refused {
                node: name.clone(),
                why,
            }),
        }
    }
    (State::Closed(a.clone(), asks), refused)
}

/// What placement does with one instance.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Place it on the node at this position; `awarded` is the clearing price when an auction
    /// chose it, with the number of valid asks.
    Place {
        /// The node's position.
        index: usize,
        /// (clearing price, valid asks), when awarded.
        awarded: Option<(i64, usize)>,
        /// Its auction closed without a valid ask.
        no_bid: bool,
    },
    /// Put it to auction among these nodes.
    Open(Vec<String>),
    /// Its auction is still taking bids.
    Wait,
}

/// What to do with `instance`, which the scheduler would place on `best` of `standings` (on
/// `views`), given the Workload's auction `state` and its `max_price` per hour.
pub fn step(
    state: &State,
    instance: &str,
    views: &[NodeView],
    standings: &[Standing],
    best: Standing,
    max_price: Option<i64>,
) -> Step {
    let auctioned =
        |s: &&Standing| s.own == best.own && views[s.index].pricing.model == PricingModel::Auction;
    match state {
        State::Open(a) if a.instance == instance => Step::Wait,
        State::Closed(a, asks) if a.instance == instance => {
            let bids: Vec<Ask> = standings
                .iter()
                .filter(auctioned)
                .filter_map(|s| {
                    let node = &views[s.index].name;
                    Some(Ask {
                        node: node.clone(),
                        amount: *asks.get(node)?,
                        reserve: s.price,
                        score: (s.score * 1e6).round() as i64,
                    })
                })
                .collect();
            match pricing::procure(&bids, max_price) {
                Ok(award) => Step::Place {
                    index: standings
                        .iter()
                        .find(|s| views[s.index].name == award.winner)
                        .map_or(best.index, |s| s.index),
                    awarded: Some((award.price, award.valid)),
                    no_bid: false,
                },
                Err(_) => Step::Place {
                    index: best.index,
                    awarded: None,
                    no_bid: true,
                },
            }
        }
        _ if views[best.index].pricing.model == PricingModel::Auction => {
            let mut field: Vec<&Standing> = standings.iter().filter(auctioned).collect();
            field.sort_by(|a, b| b.score.total_cmp(&a.score));
            Step::Open(
                field
                    .iter()
                    .take(MAX_BIDDERS)
                    .map(|s| views[s.index].name.clone())
                    .collect(),
            )
        }
        _ => Step::Place {
            index: best.index,
            awarded: None,
            no_bid: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::scheduler::tests::{GI, node, req};
    use crate::core::scheduler::{self, NodeView};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use std::sync::Arc;
    use univrs_api::resources::node::{NodeSpec, NodeStatus, SealedBid};

    /// Nodes a, b and c at Auction with rates 1000, 1200 and 1500 per core-hour, and d at
    /// Fixed rates of 900.
    fn market() -> Vec<NodeView> {
        let mut views: Vec<NodeView> = [("a", 1000), ("b", 1200), ("c", 1500), ("d", 900)]
            .into_iter()
            .map(|(n, rate)| {
                let mut v = node(n, 4000, 8 * GI);
                v.pricing.cpu_core_hour = rate;
                v.pricing.memory_gib_hour = 0;
                v.pricing.model = PricingModel::Auction;
                v
            })
            .collect();
        views[3].pricing.model = PricingModel::Fixed;
        views
    }

    fn auction(nodes: &[&str], closes_at: i64) -> Auction {
        Auction {
            id: "a1".into(),
            instance: "web-0".into(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            closes_at: Time(Timestamp::from_second(closes_at).unwrap()),
            seal_key: String::new(),
        }
    }

    fn step_on(views: &[NodeView], state: &State, max: Option<i64>) -> Step {
        let request = req(1000, 0);
        let st = scheduler::standings(views, &[0; 4], &request).unwrap();
        let best = scheduler::best(views, &st);
        step(state, "web-0", views, &st, best, max)
    }

    #[test]
    fn an_instance_goes_to_auction_among_the_auction_priced_nodes_only_when_one_is_chosen() {
        let mut views = market();
        // d is cheapest but Fixed; make it the scheduler's choice, then not.
        views[3].reputation = 1.0;
        assert!(matches!(
            step_on(&views, &State::None, None),
            Step::Place {
                index: 3,
                awarded: None,
                no_bid: false
            }
        ));
        views[3].reputation = 0.0;
        let Step::Open(mut nodes) = step_on(&views, &State::None, None) else {
            panic!("no auction opened");
        };
        nodes.sort();
        assert_eq!(nodes, ["a", "b", "c"]);
        // While it takes bids the instance waits; a void auction is opened again.
        let open = State::Open(auction(&["a", "b", "c"], 100));
        assert_eq!(step_on(&views, &open, None), Step::Wait);
        let void = State::Void(auction(&["a", "b", "c"], 100));
        assert!(matches!(step_on(&views, &void, None), Step::Open(_)));
    }

    #[test]
    fn the_lowest_valid_ask_wins_and_is_paid_the_second_lowest() {
        let mut views = market();
        views[3].reputation = 0.0;
        let closed = |asks: &[(&str, i64)]| {
            State::Closed(
                auction(&["a", "b", "c"], 100),
                asks.iter().map(|(n, a)| (n.to_string(), *a)).collect(),
            )
        };
        let at = |i: usize, price: i64, asks: usize| Step::Place {
            index: i,
            awarded: Some((price, asks)),
            no_bid: false,
        };
        let honest = closed(&[("a", 1000), ("b", 1200), ("c", 1500)]);
        assert_eq!(step_on(&views, &honest, None), at(0, 1200, 3));
        // Capped by the Workload's ceiling; an ask above it does not count.
        assert_eq!(step_on(&views, &honest, Some(1100)), at(0, 1000, 1));
        // An ask below the node's own rates does not count: b wins, paid c's ask.
        let undercut = closed(&[("a", 10), ("b", 1200), ("c", 1500)]);
        assert_eq!(step_on(&views, &undercut, None), at(1, 1500, 2));
        // A bid from a node never asked (d) does not count either.
        let stranger = closed(&[("d", 900), ("c", 1500)]);
        assert_eq!(step_on(&views, &stranger, None), at(2, 1500, 1));
        // No valid ask: placed as usual.
        let Step::Place {
            awarded: None,
            no_bid: true,
            ..
        } = step_on(&views, &closed(&[]), None)
        else {
            panic!("not placed as usual");
        };
    }

    fn node_with_bid(identity: &NodeIdentity, bid: Option<SealedBid>) -> Arc<Node> {
        let spec: NodeSpec = serde_json::from_value(serde_json::json!({
            "peerId": identity.public().peer_id(),
            "did": identity.public().did(),
            "capacity": {"cpu": "1", "memory": "1Gi"},
        }))
        .unwrap();
        let mut n = Node::new("x", spec);
        n.status = Some(NodeStatus {
            bids: bid.into_iter().collect(),
            ..Default::default()
        });
        Arc::new(n)
    }

    #[test]
    fn an_auction_closes_on_a_whole_second_no_sooner_than_its_window() {
        let window = k8s_openapi::jiff::SignedDuration::from_secs(3);
        let at = |s: i64, ns: i32| Timestamp::new(s, ns).unwrap();
        assert_eq!(close_after(at(100, 0), window), at(103, 0));
        assert_eq!(close_after(at(100, 1), window), at(104, 0));
        assert_eq!(close_after(at(100, 999_999_999), window), at(104, 0));
    }

    #[test]
    fn bids_open_only_after_the_close_and_only_as_their_holders_own() {
        let mut keys = Keys::default();
        let (id, public) = keys.open(Instant::now());
        let mut a = auction(&["alice", "bob", "carol"], 100);
        a.id = id.clone();
        let terms = Terms {
            auction: &id,
            workload: "shop/web",
            instance: "web-0",
        };
        let (alice, bob, carol) = (
            NodeIdentity::generate(),
            NodeIdentity::generate(),
            NodeIdentity::generate(),
        );
        let bid = |sealed: String| SealedBid {
            auction: id.clone(),
            workload: "shop/web".into(),
            instance: "web-0".into(),
            sealed,
        };
        let alices = bid(terms.seal(&alice, &public, 1000).unwrap());
        // Bob copies alice's sealed ask into his own status; carol bids for nothing.
        let nodes = [
            ("alice", node_with_bid(&alice, Some(alices.clone()))),
            ("bob", node_with_bid(&bob, Some(alices))),
            ("carol", node_with_bid(&carol, None)),
        ];
        let node_of = |n: &str| nodes.iter().find(|(m, _)| *m == n).map(|(_, x)| x.clone());
        let before = Timestamp::from_second(99).unwrap();
        let (state, refused) = super::state("shop/web", Some(&a), &keys, before, node_of);
        assert_eq!((state, refused.len()), (State::Open(a.clone()), 0));
        let after = Timestamp::from_second(100).unwrap();
        let (state, refused) = super::state("shop/web", Some(&a), &keys, after, node_of);
        assert_eq!(
            state,
            State::Closed(a.clone(), [("alice".to_string(), 1000)].into())
        );
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].node, "bob");
        // A controller without the key cannot open anything: the auction is void.
        keys.close(&id);
        let (state, _) = super::state("shop/web", Some(&a), &keys, after, node_of);
        assert_eq!(state, State::Void(a));
    }
}
