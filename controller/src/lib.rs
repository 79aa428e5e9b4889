//! Univrs controller (reconcilers arrive with the controller issue).
