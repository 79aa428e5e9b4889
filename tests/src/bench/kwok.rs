//! kwok (`sigs.k8s.io/kwok`, built from its pinned module) renewing many fake nodes' Leases as
//! kubelets do.
