//! Mutual-credit ledger.
