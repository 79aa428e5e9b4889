//! ENR economics (filled by the ENR module work).
