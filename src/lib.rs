//! wald
