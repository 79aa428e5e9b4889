//! Who must hear of a change: the objects to wake, collected as a set per controller and sent
//! to the queues at once, so each is woken once however many changes concern it. Used by the
//! watch feeds and by the reconcilers for changes of their own making.

use crate::state::context::Context;
use crate::state::index::{NodeChange, WorkloadChange};
use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use std::collections::HashSet;
use std::hash::Hash;
use univrs_api::account::AccountKind;
use univrs_api::resources::creditline::LimitPolicy;
use univrs_api::{CreditLine, Node, Vouch, Workload};

/// Objects to wake, by controller (a set, so each is woken once).
#[derive(Default)]
pub struct Wake {
    /// Workloads.
    pub workloads: HashSet<ObjectRef<Workload>>,
    /// Nodes.
    pub nodes: HashSet<ObjectRef<Node>>,
    /// Vouches.
    pub vouches: HashSet<ObjectRef<Vouch>>,
    /// Credit lines.
    pub credit_lines: HashSet<ObjectRef<CreditLine>>,
    /// Every waiting workload: looked up once when sent, not once per change that makes room
    /// (a relist of thousands of nodes would otherwise scan every workload per node).
    waiting: bool,
}

impl Wake {
    /// Sends everything collected. A closed queue means its controller has stopped.
    pub fn send(&mut self, ctx: &Context) {
        fn drain<K: Resource>(set: &mut HashSet<ObjectRef<K>>, tx: &UnboundedSender<ObjectRef<K>>)
        where
            K::DynamicType: Hash + Eq,
        {
            for r in set.drain() {
                let _ = tx.unbounded_send(r);
            }
        }
        if std::mem::take(&mut self.waiting) {
            self.workloads.extend(ctx.index().waiting());
        }
        let q = &ctx.queues;
        drain(&mut self.workloads, &q.workloads);
        drain(&mut self.nodes, &q.nodes);
        drain(&mut self.vouches, &q.vouches);
        drain(&mut self.credit_lines, &q.credit_lines);
    }

    /// What a workload's change means for the nodes it touched and the workloads waiting.
    pub fn workload_change(&mut self, change: &WorkloadChange) {
        self.nodes
            .extend(change.nodes.iter().map(|n| ObjectRef::new(n)));
        self.waiting |= change.freed;
    }

    /// What a node's change means for its instances, the waiting workloads, its vouches and
    /// credit lines.
    pub fn node_change(&mut self, ctx: &Context, node: &Node, change: NodeChange) {
        let name = node.name_any();
        if change.affects_instances {
            self.workloads.extend(ctx.index().holders_of(&name));
        }
        self.waiting |= change.may_make_room;
        if change.affects_vouches {
            let did = &node.spec.did;
            self.vouches.extend(
                ctx.vouches
                    .state()
                    .iter()
                    .filter(|v| v.spec.voucher == *did || v.spec.subject == *did)
                    .map(|v| ObjectRef::from_obj(v.as_ref())),
            );
        }
        if change.appeared_or_left || change.reputation_moved {
            let is_node = |a: &univrs_api::Account| a.kind == AccountKind::Node && a.name == name;
            self.credit_lines.extend(
                ctx.credit_lines
                    .state()
                    .iter()
                    .filter(|cl| {
                        // A reputation move concerns only the lines it owes on by reputation.
                        (change.appeared_or_left
                            && (is_node(&cl.spec.creditor) || is_node(&cl.spec.debtor)))
                            || (cl.spec.limit_policy == LimitPolicy::Reputation
                                && is_node(&cl.spec.debtor))
                    })
                    .map(|cl| ObjectRef::from_obj(cl.as_ref())),
            );
        }
    }
}
