//! The controllers' queues: one per reconciled kind, fed by the watch feeds (and by the
//! reconcilers themselves when they learn of a change by their own write), drained by the
//! controllers `lib.rs` runs.

use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use kube::runtime::reflector::ObjectRef;
use univrs_api::{CreditLine, Node, Vouch, Workload};

/// Where wake-ups go: one queue per controller.
#[derive(Clone)]
pub struct Queues {
    /// The Workload controller's.
    pub workloads: UnboundedSender<ObjectRef<Workload>>,
    /// The Node controller's.
    pub nodes: UnboundedSender<ObjectRef<Node>>,
    /// The Vouch controller's.
    pub vouches: UnboundedSender<ObjectRef<Vouch>>,
    /// The CreditLine controller's.
    pub credit_lines: UnboundedSender<ObjectRef<CreditLine>>,
}

/// The receiving ends of [`Queues`], one per controller.
pub struct Receivers {
    /// The Workload controller's.
    pub workloads: UnboundedReceiver<ObjectRef<Workload>>,
    /// The Node controller's.
    pub nodes: UnboundedReceiver<ObjectRef<Node>>,
    /// The Vouch controller's.
    pub vouches: UnboundedReceiver<ObjectRef<Vouch>>,
    /// The CreditLine controller's.
    pub credit_lines: UnboundedReceiver<ObjectRef<CreditLine>>,
}

/// A fresh set of queues.
pub fn new() -> (Queues, Receivers) {
    let (w, wr) = unbounded();
    let (n, nr) = unbounded();
    let (v, vr) = unbounded();
    let (c, cr) = unbounded();
    (
        Queues {
            workloads: w,
            nodes: n,
            vouches: v,
            credit_lines: c,
        },
        Receivers {
            workloads: wr,
            nodes: nr,
            vouches: vr,
            credit_lines: cr,
        },
    )
}
